-- What the page does: 90% read the newest 100 items, 10% add one.
dofile(os.getenv("WRK_DIR") .. "/report.lua")
count_statuses()

local counter = 0
local list = wrk.format("GET", "/api/items?limit=100")
request = function()
  counter = counter + 1
  if counter % 10 == 0 then
    return wrk.format("POST", "/api/items", {["Content-Type"] = "application/json"},
      string.format('{"text":"mixed item %d"}', counter))
  end
  return list
end
