-- wrk script of the HTTP benchmark: each thread walks its own slice of the
-- pre-signed corpus (CORPUS_DIR/corpus.<thread>, written by corpus.pl),
-- sending every request once, in order.  Requests are formatted in init()
-- so request() is a table lookup.  A thread whose slice runs out stops
-- (and the run is reported as exhausted) rather than resend a delivery.
--
-- Environment:
--   CORPUS_DIR    the slices
--   CORPUS_START  optional "n1 n2 ...": how many requests of each slice
--                 earlier runs already sent (skipped here)
--   RESULT_DIR    where done() writes summary.txt, and answered.<thread>:
--                 the job number of every 200 answer that completed a job

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
    local skip = starts[id] or 0
    reqs = {}
    kinds = {}
    local line_no = 0
    for line in io.lines(os.getenv("CORPUS_DIR") .. "/corpus." .. id) do
        line_no = line_no + 1
        if line_no > skip then
            local kind, delivery, sig, body = line:match("^(%a+)\t([^\t]+)\t(%x+)\t(.*)$")
            kinds[#kinds + 1] = kind
            reqs[#reqs + 1] = wrk.format("POST", "/webhooks/github", {
                ["Content-Type"] = "application/json",
                ["User-Agent"] = "GitHub-Hookshot/bench",
                ["X-GitHub-Event"] = "workflow_run",
                ["X-GitHub-Delivery"] = delivery,
                ["X-Hub-Signature-256"] = "sha256=" .. sig,
            }, body)
        end
    end
    total = #reqs
    -- what a stopping thread sends if asked once more: no database effect
    healthz = wrk.format("GET", "/healthz", {})
    sent = 0
    sent_kind = { run = 0, hb = 0, dup = 0 }
    exhausted = 0
    status = {}
    -- 200 answers by what the result says
    ok_completed, ok_heartbeat, ok_duplicate, ok_other = 0, 0, 0, 0
    completed_jobs = {}
end

function request()
    if sent >= total then
        -- nothing left to send: stop this thread instead of wrapping
        exhausted = 1
        wrk.thread:stop()
        return healthz
    end
    sent = sent + 1
    local k = kinds[sent]
    sent_kind[k] = sent_kind[k] + 1
    return reqs[sent]
end

function response(code, headers, body)
    status[code] = (status[code] or 0) + 1
    if code ~= 200 then
        return
    end
    if body:find('"duplicate"%s*:%s*true') then
        ok_duplicate = ok_duplicate + 1
    elseif body:find('"action"%s*:%s*"completed"') and body:find('"applied"%s*:%s*true') then
        ok_completed = ok_completed + 1
        local n = body:match('"job_id"%s*:%s*"00000000%-0000%-4000%-8000%-(%d+)"')
        completed_jobs[#completed_jobs + 1] = tonumber(n) - 100000000000
    elseif body:find('"action"%s*:%s*"heartbeat"') then
        ok_heartbeat = ok_heartbeat + 1
    else
        ok_other = ok_other + 1
    end
end

function done(summary, latency, requests)
    local out = os.getenv("RESULT_DIR")
    local f = assert(io.open(out .. "/summary.txt", "w"))
    local agg = { sent = 0, run = 0, hb = 0, dup = 0, exhausted = 0,
                  ok_completed = 0, ok_heartbeat = 0, ok_duplicate = 0, ok_other = 0 }
    local codes = {}
    for i, t in ipairs(threads) do
        agg.sent = agg.sent + t:get("sent")
        local sk = t:get("sent_kind")
        agg.run = agg.run + sk.run
        agg.hb = agg.hb + sk.hb
        agg.dup = agg.dup + sk.dup
        agg.exhausted = agg.exhausted + t:get("exhausted")
        for _, k in ipairs({ "ok_completed", "ok_heartbeat", "ok_duplicate", "ok_other" }) do
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
    f:write(string.format("errors_connect=%d\nerrors_read=%d\nerrors_write=%d\nerrors_timeout=%d\n",
        summary.errors.connect, summary.errors.read, summary.errors.write,
        summary.errors.timeout))
    f:write(string.format("codes=%s\nnon200=%d\n", table.concat(list, ","), non200))
    for _, k in ipairs({ "sent", "run", "hb", "dup", "exhausted", "ok_completed",
                         "ok_heartbeat", "ok_duplicate", "ok_other" }) do
        f:write(k, "=", agg[k], "\n")
    end
    f:close()
end
