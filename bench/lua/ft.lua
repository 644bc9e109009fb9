-- wrk script for the filetracker benchmark (bench/run.py drives it).
--
-- Arguments after `--`: MODE NNAMES READ_PREFIX WRITE_PREFIX DATE SIZE WRITE_SHARE
--   MODE          put | get | head | mix
--   NNAMES        how many pre-populated names READ_PREFIX0 .. READ_PREFIX<NNAMES-1> exist
--   READ_PREFIX   e.g. /files/bench/r/   (GET/HEAD targets)
--   WRITE_PREFIX  e.g. /files/bench/w/1700000000/   (PUT targets; each request a new name)
--   DATE          URL-encoded HTTP date for ?last_modified=
--   SIZE          PUT body size in bytes
--   WRITE_SHARE   for MODE=mix: fraction of requests that are PUTs (0.1 = 90/10 read/write)
--   DIAG          optional, "1": also count answers by status and keep the first
--                 error's status and X-Exception (slower: only for diagnosing errors)
--
-- Every PUT body is random bytes whose first 32 bytes carry the thread and
-- request number, so no two PUTs store the same content (no dedup fast path).
-- done() prints one `BENCH_JSON {...}` line with counts and latency percentiles
-- (microseconds), parsed by bench/load.py.

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  mode = args[1]
  nnames = tonumber(args[2])
  rprefix = args[3]
  wprefix = args[4]
  date = args[5]
  size = tonumber(args[6])
  wshare = tonumber(args[7])
  counter = 0
  rnext = (tid or 0) * 7919
  math.randomseed(os.time() + (tid or 0) * 104729)
  local t = {}
  for i = 1, size - 32 do t[i] = string.char(math.random(0, 255)) end
  body_tail = table.concat(t)
  put_headers = { ["Content-Type"] = "application/octet-stream" }
  if args[8] == "1" then
    codes = {}
    codes_str = ""
    first_error = ""
    -- Defined only in diagnosis runs: a response() callback makes wrk parse
    -- every header into Lua, which costs throughput.
    response = function(status, headers, body)
      codes[status] = (codes[status] or 0) + 1
      if status >= 400 and first_error == "" then
        first_error = status .. " " .. (headers["X-Exception"] or headers["x-exception"] or "")
      end
      local parts = {}
      for code, n in pairs(codes) do parts[#parts + 1] = code .. "=" .. n end
      codes_str = table.concat(parts, ",")
    end
  end
end

local function put_request()
  counter = counter + 1
  local tag = string.format("%-32s", (tid or 0) .. "/" .. counter)
  local path = wprefix .. (tid or 0) .. "/" .. counter .. "?last_modified=" .. date
  return wrk.format("PUT", path, put_headers, tag .. body_tail)
end

local function read_request(method)
  rnext = rnext + 1
  return wrk.format(method, rprefix .. (rnext % nnames))
end

function request()
  if mode == "put" then
    return put_request()
  elseif mode == "get" then
    return read_request("GET")
  elseif mode == "head" then
    return read_request("HEAD")
  else
    if math.random() < wshare then
      return put_request()
    end
    return read_request("GET")
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "err_connect": %d, ' ..
    '"err_read": %d, "err_write": %d, "err_status": %d, "err_timeout": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max))
  for i, thread in ipairs(threads) do
    local c = thread:get("codes_str")
    if c then
      io.write("BENCH_DIAG " .. i .. " codes " .. c .. "\n")
      io.write("BENCH_DIAG " .. i .. " first_error " .. (thread:get("first_error") or "") .. "\n")
    end
  end
end
