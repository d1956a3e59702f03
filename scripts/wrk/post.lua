-- POST /api/items with a distinct text per request.
dofile(os.getenv("WRK_DIR") .. "/report.lua")
count_statuses()

local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("POST", "/api/items", {["Content-Type"] = "application/json"},
    string.format('{"text":"bench item %d"}', counter))
end
