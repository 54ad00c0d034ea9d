-- A token bucket per tenant. KEYS[1]: the bucket (a hash: tokens, at).
-- ARGV: rate (tokens per second), burst (bucket size), cost (tokens this request takes).
-- Returns {allowed (1/0), milliseconds until the cost is available}.
-- Redis's own clock, so every API process sees one time.
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local allowed = 0
local wait = 0
if tokens >= cost then
    tokens = tokens - cost
    allowed = 1
else
    wait = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
-- A full bucket is the same as no bucket: let idle tenants' keys expire.
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * 1000 / rate) + 1000)
return {allowed, wait}
