-- Shared by every benchmark scenario: prints one JSON line with throughput, latency
-- percentiles and (when the scenario counts them) responses by status when wrk finishes.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  -- Each thread runs its own Lua state: this tells them apart (distinct idempotency keys).
  thread:set("thread_number", #threads)
end

function init(args)
  statuses = {}
end

-- Counting statuses needs wrk's response() hook, which copies every body into Lua; only the
-- write scenarios (small bodies, where acknowledged writes matter) turn it on.
function count_statuses()
  response = function(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
  end
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses") or {}) do
      counts[status] = (counts[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(counts) do
    table.insert(parts, string.format('"%d":%d', status, count))
  end
  local errors = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f},"statuses":{%s}}\n',
    summary.requests, summary.duration, summary.bytes,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean, table.concat(parts, ",")))
end
