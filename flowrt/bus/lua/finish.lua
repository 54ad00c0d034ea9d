-- Finish with one execution in one round trip: acknowledge (and delete) the hints the
-- last pass covered, then release the lock if we still hold it (compare-and-delete).
-- KEYS[1] stream; KEYS[2] lock key; ARGV[1] group; ARGV[2] our token; ARGV[3..] ids.
-- Returns 1 if the lock was released.
for i = 3, #ARGV do
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  redis.call('XDEL', KEYS[1], ARGV[i])
end
if redis.call('GET', KEYS[2]) == ARGV[2] then
  return redis.call('DEL', KEYS[2])
end
return 0
