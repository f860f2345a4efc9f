-- wrk script: GET a path with "Authorization: Bearer <token>", taking the
-- tokens of a file (one a line) in turn, so that every request of a run is
-- made as one of many distinct users.
--
--   wrk -t2 -c32 -d10s --latency -s bench/tokens.lua URL -- TOKENS_FILE [PATH]
--
-- PATH defaults to /api/documents/x. The requests are formatted once in
-- init(), so the per-request cost on the client is a table lookup: the
-- same script is used for every target of the benchmark, so the client
-- does the same work whichever server it measures.
--
-- With TOKENS_DELAY_MS=N in the environment, every connection waits N ms
-- after each response before its next request (wrk's delay()): a paced
-- load, the same for every target, below what the machine can do, for
-- latency at equal load. wrk measures each request from its write, so the
-- wait is not part of the latency. (wrk looks for delay() when it loads
-- the script, before init() sees the arguments; hence the environment.)

local delay_ms = tonumber(os.getenv("TOKENS_DELAY_MS") or "")
if delay_ms then
	function delay()
		return delay_ms
	end
end

local counter = 0

-- setup runs in the main Lua state once per thread: number the threads so
-- that they start at different places in the token list.
function setup(thread)
	thread:set("thread_id", counter)
	counter = counter + 1
end

local requests = {}
local n = 0
local i = 0

function init(args)
	local file = args[1]
	if file == nil then
		error("usage: wrk ... -s tokens.lua URL -- TOKENS_FILE [PATH]")
	end
	local path = args[2] or "/api/documents/x"
	for line in io.lines(file) do
		if line ~= "" then
			n = n + 1
			requests[n] = wrk.format("GET", path, { Authorization = "Bearer " .. line })
		end
	end
	if n == 0 then
		error("no tokens in " .. file)
	end
	-- Threads start half a list (or so) apart.
	i = ((thread_id or 0) * math.floor(n / 2 + 1)) % n
end

function request()
	i = i % n + 1
	return requests[i]
end
