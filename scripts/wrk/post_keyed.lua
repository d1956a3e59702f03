-- POST /api/items with a distinct text and a distinct Idempotency-Key per request, as the page
-- sends them: what recording the key costs.
dofile(os.getenv("WRK_DIR") .. "/report.lua")
count_statuses()

local counter = 0
local run = os.time()
request = function()
  counter = counter + 1
  local key = string.format("bench-%d-%d-%d", run, thread_number, counter)
  return wrk.format("POST", "/api/items",
    {["Content-Type"] = "application/json", ["Idempotency-Key"] = key},
    string.format('{"text":"bench item %d"}', counter))
end
