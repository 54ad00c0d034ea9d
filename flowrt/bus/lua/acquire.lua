-- Take a lock, or confirm we already hold it (a retried SET NX after a lost reply
-- must not make us believe someone else holds our own lock).
-- KEYS[1] lock key; ARGV[1] our token; ARGV[2] TTL in ms. Returns 1 if we hold it.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
