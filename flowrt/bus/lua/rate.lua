-- Token buckets, one per tenant, for a batch of requests. KEYS[i]: a bucket (a hash:
-- tokens, at). ARGV[3i-2 .. 3i]: its rate (tokens per second), burst (bucket size)
-- and the number of requests that want a token now.
-- Returns, per bucket, {granted, milliseconds until the next token}. Redis's own
-- clock, so every API process sees one time.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i, key in ipairs(KEYS) do
    local rate = tonumber(ARGV[3 * i - 2])
    local burst = tonumber(ARGV[3 * i - 1])
    local want = tonumber(ARGV[3 * i])
    local b = redis.call('HMGET', key, 'tokens', 'at')
    local tokens = tonumber(b[1]) or burst
    local at = tonumber(b[2]) or now
    tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
    local granted = math.min(want, math.floor(tokens))
    tokens = tokens - granted
    local wait = 0
    if granted < want then
        wait = math.ceil((1 - tokens) * 1000 / rate)
    end
    redis.call('HSET', key, 'tokens', tostring(tokens), 'at', now)
    -- A full bucket is the same as no bucket: let idle tenants' keys expire.
    redis.call('PEXPIRE', key, math.ceil((burst - tokens) * 1000 / rate) + 1000)
    out[#out + 1] = granted
    out[#out + 1] = wait
end
return out
