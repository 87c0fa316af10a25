-- wrk script of the HTTP benchmark: each thread walks its own slice of the
-- pre-signed corpus (CORPUS_DIR/requests.<thread>, raw requests each
-- followed by a NUL byte, written by corpus.pl), sending every request
-- once, in order.  wrk runs init() of one thread after the other while the
-- threads already started send, so init() only reads the file: a slow one
-- would give the first thread extra time that the rate does not account
-- for.  A thread whose slice runs out stops (and the run is reported as
-- exhausted) rather than resend a delivery.
--
-- Environment:
--   CORPUS_DIR    the slices
--   CORPUS_START  optional "n1 n2 ...": how many requests of each slice
--                 earlier runs already sent (skipped here)
--   RESULT_DIR    where done() writes summary.txt, quantiles, and
--                 answered.<thread>: the job number of every 200 answer
--                 that completed a job

local threads = {}

function setup(thread)
    table.insert(threads, thread)
    thread:set("id", #threads)
end

function init(args)
    local starts = {}
    for n in (os.getenv("CORPUS_START") or ""):gmatch("%d+") do
        starts[#starts + 1] = tonumber(n)
    end
    local f = assert(io.open(os.getenv("CORPUS_DIR") .. "/requests." .. id, "rb"))
    buf = f:read("*a")
    f:close()
    pos = 1
    for _ = 1, starts[id] or 0 do
        pos = (buf:find("\0", pos, true) or #buf) + 1
    end
    -- what a stopping thread sends if asked once more: no database effect
    healthz = wrk.format("GET", "/healthz", {})
    sent = 0
    exhausted = 0
    status = {}
    -- 200 answers by what the result says
    ok_completed, ok_heartbeat, ok_duplicate, ok_other = 0, 0, 0, 0
    completed_jobs = {}
end

function request()
    local e = buf:find("\0", pos, true)
    if e == nil then
        -- nothing left to send: stop this thread instead of wrapping
        exhausted = 1
        wrk.thread:stop()
        return healthz
    end
    local r = buf:sub(pos, e - 1)
    pos = e + 1
    sent = sent + 1
    return r
end

function response(code, headers, body)
    status[code] = (status[code] or 0) + 1
    if code ~= 200 then
        return
    end
    -- plain searches in the answer as PostgreSQL prints jsonb (the listener
    -- passes it through): this runs on the same CPUs as what it measures (an
    -- answer in another layout counts as "other", which fails the run)
    if body:find('"duplicate": true', 1, true) then
        ok_duplicate = ok_duplicate + 1
    elseif body:find('"action": "completed"', 1, true) and body:find('"applied": true', 1, true) then
        ok_completed = ok_completed + 1
        local n = body:match('"job_id": "00000000%-0000%-4000%-8000%-(%d+)"')
        completed_jobs[#completed_jobs + 1] = tonumber(n) - 100000000000
    elseif body:find('"action": "heartbeat"', 1, true) then
        ok_heartbeat = ok_heartbeat + 1
    else
        ok_other = ok_other + 1
    end
end

function done(summary, latency, requests)
    local out = os.getenv("RESULT_DIR")
    local f = assert(io.open(out .. "/summary.txt", "w"))
    local agg = { sent = 0, exhausted = 0,
                  ok_completed = 0, ok_heartbeat = 0, ok_duplicate = 0, ok_other = 0 }
    local codes = {}
    for i, t in ipairs(threads) do
        for k, _ in pairs(agg) do
            agg[k] = agg[k] + t:get(k)
        end
        for code, n in pairs(t:get("status")) do
            codes[code] = (codes[code] or 0) + n
        end
        f:write(string.format("sent.%d=%d\n", i, t:get("sent")))
        local a = assert(io.open(out .. "/answered." .. i, "w"))
        for _, j in ipairs(t:get("completed_jobs")) do
            a:write(j, "\n")
        end
        a:close()
    end
    local non200 = 0
    local list = {}
    for code, n in pairs(codes) do
        list[#list + 1] = code .. ":" .. n
        if code ~= 200 then
            non200 = non200 + n
        end
    end
    table.sort(list)
    f:write(string.format("duration_us=%d\nrequests=%d\nrps=%.1f\n", summary.duration,
        summary.requests, summary.requests / (summary.duration / 1e6)))
    f:write(string.format("p50_us=%d\np90_us=%d\np99_us=%d\nmax_us=%d\nmean_us=%.0f\n",
        latency:percentile(50), latency:percentile(90), latency:percentile(99),
        latency.max, latency.mean))
    f:write(string.format("errors_connect=%d\nerrors_read=%d\nerrors_write=%d\nerrors_timeout=%d\n",
        summary.errors.connect, summary.errors.read, summary.errors.write,
        summary.errors.timeout))
    f:write(string.format("codes=%s\nnon200=%d\n", table.concat(list, ","), non200))
    for k, v in pairs(agg) do
        f:write(k, "=", v, "\n")
    end
    f:close()
    -- the latency distribution as quantiles (every 0.5%, then every 0.1%
    -- above 99%), so that the runner can merge several runs
    local q = {}
    for i = 1, 198 do q[#q + 1] = i / 2 end
    for i = 991, 999 do q[#q + 1] = i / 10 end
    local g = assert(io.open(out .. "/quantiles", "w"))
    for _, p in ipairs(q) do
        g:write(string.format("%.1f %d\n", p, latency:percentile(p)))
    end
    g:write(string.format("100.0 %d\n", latency.max))
    g:close()
end
