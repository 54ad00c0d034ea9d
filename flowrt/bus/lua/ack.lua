-- Acknowledge hints and delete them, so the stream holds only unacknowledged work and
-- never needs trimming by count (which could drop unprocessed hints).
-- KEYS[1] stream; ARGV[1] group; ARGV[2..] message ids. Returns the number acked.
local acked = 0
for i = 2, #ARGV do
  acked = acked + redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  redis.call('XDEL', KEYS[1], ARGV[i])
end
return acked
