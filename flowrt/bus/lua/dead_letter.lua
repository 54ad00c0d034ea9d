-- Move one hint to the dead-letter stream: add it there, then ack and delete it.
-- KEYS[1] stream; KEYS[2] dead stream; ARGV: group, id, tenant, execution, seq,
-- deliveries, reason. Returns the dead-letter entry id.
local dead = redis.call('XADD', KEYS[2], '*', 't', ARGV[3], 'x', ARGV[4], 's', ARGV[5],
  'id', ARGV[2], 'deliveries', ARGV[6], 'reason', ARGV[7])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return dead
