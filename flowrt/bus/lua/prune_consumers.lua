-- Delete the group's consumers that hold no pending hint and have been idle at least
-- ARGV[2] ms: workers that died or were scaled away, once the reclaimer has taken
-- their hints. XGROUP DELCONSUMER drops a consumer's pending hints with it, so the
-- check and the delete are one script: no hint can be delivered to a consumer between
-- seeing it empty and deleting it.
-- KEYS[1] stream; ARGV[1] group; ARGV[2] min idle in ms; ARGV[3] (optional) only
-- this consumer. Returns the names deleted (none when the stream or group is missing).
local consumers = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if type(consumers) == 'table' and consumers['err'] then
  if string.find(consumers['err'], 'no such key') or string.find(consumers['err'], 'NOGROUP') then
    return {}
  end
  return redis.error_reply(consumers['err'])
end
local min_idle = tonumber(ARGV[2])
local deleted = {}
for _, fields in ipairs(consumers) do
  local c = {}
  for i = 1, #fields, 2 do
    c[fields[i]] = fields[i + 1]
  end
  if c['pending'] == 0 and c['idle'] >= min_idle and (ARGV[3] == nil or c['name'] == ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], c['name'])
    deleted[#deleted + 1] = c['name']
  end
end
return deleted
