-- Take a lock, or confirm we already hold it (a retried SET NX after a lost reply
-- must not make us believe someone else holds our own lock). A caller that finds the
-- lock held leaves its hints to the holder: it raises the wake flag, which the
-- holder reads when it releases (finish.lua) to look at the log once more.
-- KEYS[1] lock key; KEYS[2] wake flag; ARGV[1] our token; ARGV[2] TTL in ms.
-- Returns 1 if we hold it.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
return 0
