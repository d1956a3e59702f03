-- Plain GET of the URL given to wrk, with the shared report.
dofile(os.getenv("WRK_DIR") .. "/report.lua")
