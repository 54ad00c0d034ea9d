-- Extend a lock only if we still hold it (compare-and-pexpire).
-- KEYS[1] lock key; ARGV[1] our token; ARGV[2] new TTL in ms. Returns 1 if extended.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
