-- Finish with one execution in one round trip: acknowledge (and delete) the hints the
-- last pass covered, release the lock if we still hold it (compare-and-delete), and
-- take the wake flag: set when another worker found the lock held and left its hints
-- to us, so the caller must look at the log once more.
-- KEYS[1] stream; KEYS[2] lock key; KEYS[3] wake flag; ARGV[1] group; ARGV[2] our
-- token; ARGV[3..] ids. Returns {1 if the lock was released, 1 if the flag was up}.
for i = 3, #ARGV do
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  redis.call('XDEL', KEYS[1], ARGV[i])
end
local released = 0
if redis.call('GET', KEYS[2]) == ARGV[2] then
  released = redis.call('DEL', KEYS[2])
end
local woken = redis.call('DEL', KEYS[3])
return {released, woken}
