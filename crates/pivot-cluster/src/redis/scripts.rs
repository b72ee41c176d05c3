//! The Lua scripts behind every state change: each runs atomically on the server, so a
//! compare-and-set needs no WATCH/MULTI (which a shared multiplexed connection cannot isolate).
//!
//! Some scripts derive key names from a prefix passed in ARGV (the old owner's call set, a debug
//! call's keys): fine on a standalone or Sentinel-managed server, which is what pivot supports;
//! Redis Cluster, which needs every key in KEYS, is not a target.

use redis::Script;

/// `{status, epoch}`: 1 = claimed at `epoch`; 0 = owned by another node (current `epoch`);
/// -1 = the call bound is reached.
/// KEYS: call hash, all-calls zset, account zset, node zset.
/// ARGV: call id, account, node, max calls, node-calls key prefix; optionally a first
/// checkpoint and the time (ms), written as the new epoch's state when the claim is won.
const CLAIM: &str = r"
local function first_checkpoint(epoch)
  if ARGV[6] then
    redis.call('HSET', KEYS[1], 'state', ARGV[6], 'state_node', ARGV[3], 'state_epoch', epoch, 'updated', ARGV[7])
  end
end
local node = redis.call('HGET', KEYS[1], 'node')
if node then
  local epoch = tonumber(redis.call('HGET', KEYS[1], 'epoch'))
  if redis.call('HGET', KEYS[1], 'released') ~= '1' then
    return {0, epoch}
  end
  -- A released call keeps its account and checkpoint: claiming it is a handover.
  epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
  redis.call('HSET', KEYS[1], 'node', ARGV[3], 'released', '0')
  redis.call('ZREM', ARGV[5] .. node, ARGV[1])
  redis.call('ZADD', KEYS[4], 0, ARGV[1])
  first_checkpoint(epoch)
  return {1, epoch}
end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
  return {-1, 0}
end
redis.call('HSET', KEYS[1], 'node', ARGV[3], 'epoch', 1, 'account', ARGV[2], 'released', '0')
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
redis.call('ZADD', KEYS[4], 0, ARGV[1])
first_checkpoint(1)
return {1, 1}
";

/// `{status, epoch, state, state_node, state_epoch, updated}`: 1 = adopted at `epoch`, with
/// the checkpoint to resume from (nil fields: none); 0 = the epoch moved on (current `epoch`);
/// -2 = no such call. The checkpoint comes back with the adoption so a takeover costs one
/// round trip per call, not two.
/// KEYS: call hash, new node's zset. ARGV: call id, node, expected epoch, node-calls prefix.
const ADOPT: &str = r"
local node = redis.call('HGET', KEYS[1], 'node')
if not node then
  return {-2, 0, false, false, false, false}
end
local epoch = tonumber(redis.call('HGET', KEYS[1], 'epoch'))
if epoch ~= tonumber(ARGV[3]) then
  return {0, epoch, false, false, false, false}
end
epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'node', ARGV[2], 'released', '0')
redis.call('ZREM', ARGV[4] .. node, ARGV[1])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
local state = redis.call('HMGET', KEYS[1], 'state', 'state_node', 'state_epoch', 'updated')
return {1, epoch, state[1], state[2], state[3], state[4]}
";

/// The fencing check every holder-only write starts with: `{-2, 0}` if the call is unknown,
/// `{0, current}` if ARGV[1] is not its epoch.
macro_rules! fence {
    () => {
        r"
local current = redis.call('HGET', KEYS[1], 'epoch')
if not current then
  return {-2, 0}
end
current = tonumber(current)
if current ~= tonumber(ARGV[1]) then
  return {0, current}
end
"
    };
}

/// `{status, epoch}` as [`fence!`], 1 = written.
/// KEYS: call hash. ARGV: epoch, node, state, now (ms).
const CHECKPOINT: &str = concat!(
    fence!(),
    r"
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'state_node', ARGV[2], 'state_epoch', ARGV[1], 'updated', ARGV[4])
return {1, current}
"
);

/// `{status, epoch}` as [`fence!`], 1 = released. KEYS: call hash. ARGV: epoch.
const RELEASE: &str = concat!(
    fence!(),
    r"
redis.call('HSET', KEYS[1], 'released', '1')
return {1, current}
"
);

/// `{status, epoch}` as [`fence!`], 1 = forgotten.
/// KEYS: call hash, all-calls zset. ARGV: epoch, call id, account-calls prefix, node-calls prefix.
const FINISH: &str = concat!(
    fence!(),
    r"
local record = redis.call('HMGET', KEYS[1], 'node', 'account')
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
if record[2] then redis.call('ZREM', ARGV[3] .. record[2], ARGV[2]) end
if record[1] then redis.call('ZREM', ARGV[4] .. record[1], ARGV[2]) end
return {1, current}
"
);

/// Flat `[call id, node, epoch, account, released]*`, by call id, at most ARGV[1] calls.
/// KEYS: an index zset (all, one account's, one node's). ARGV: limit, call key prefix.
const CALLS: &str = r"
local ids = redis.call('ZRANGEBYLEX', KEYS[1], '-', '+', 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, id in ipairs(ids) do
  local r = redis.call('HMGET', ARGV[2] .. id, 'node', 'epoch', 'account', 'released')
  if r[1] and r[2] and r[3] then
    table.insert(out, id)
    table.insert(out, r[1])
    table.insert(out, r[2])
    table.insert(out, r[3])
    table.insert(out, r[4] or '0')
  end
end
return out
";

/// The server's clock in milliseconds, for TTL bookkeeping that must agree with PX/PEXPIRE.
/// Effects replication makes a clock read followed by writes safe (the default since Redis 5,
/// asked for explicitly on older servers).
macro_rules! now_ms {
    () => {
        r"
if redis.replicate_commands then redis.replicate_commands() end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"
    };
}

/// 1 = renewed, 0 = the node bound is reached.
/// KEYS: node key, nodes zset (node → expiry ms). ARGV: node, advertise, ttl ms, max nodes.
const HEARTBEAT: &str = concat!(
    now_ms!(),
    r"
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
return 1
"
);

/// KEYS: node key, nodes zset. ARGV: node.
const LEAVE: &str = r"
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
";

/// Flat `[node, advertise]*` of the nodes whose lease has not expired; prunes the others.
/// KEYS: nodes zset. ARGV: node key prefix.
const LIVE: &str = concat!(
    now_ms!(),
    r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
local out = {}
for _, id in ipairs(ids) do
  local advertise = redis.call('GET', ARGV[1] .. id)
  if advertise then
    table.insert(out, id)
    table.insert(out, advertise)
  end
end
return out
"
);

/// `{'ok'}`, `{'exists'}` (create-only and the id is taken), `{'taken', number, owner}` or
/// `{'full'}`. An owner is the JSON `[account, id]` of a callflow.
/// KEYS: account's callflows hash (id → JSON), account's callflow-numbers hash (id → JSON list),
/// numbers hash (number → owner), callflow index set (owners), patterns hash (owner → JSON
/// list), patterns version.
/// ARGV: id, owner, callflow JSON, max callflows, create-only ('1'/'0'), patterns JSON or '',
/// numbers JSON, numbers….
const CALLFLOW_PUT: &str = r"
local exists = redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1
if exists and ARGV[5] == '1' then
  return {'exists'}
end
for i = 8, #ARGV do
  local owner = redis.call('HGET', KEYS[3], ARGV[i])
  if owner and owner ~= ARGV[2] then
    return {'taken', ARGV[i], owner}
  end
end
if not exists and redis.call('SCARD', KEYS[4]) >= tonumber(ARGV[4]) then
  return {'full'}
end
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old then
  for _, number in ipairs(cjson.decode(old)) do
    if redis.call('HGET', KEYS[3], number) == ARGV[2] then
      redis.call('HDEL', KEYS[3], number)
    end
  end
end
for i = 8, #ARGV do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[2])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[7])
redis.call('SADD', KEYS[4], ARGV[2])
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[5], ARGV[2], ARGV[6])
  redis.call('INCR', KEYS[6])
elseif redis.call('HDEL', KEYS[5], ARGV[2]) == 1 then
  redis.call('INCR', KEYS[6])
end
return {'ok'}
";

/// 1 if the callflow existed. KEYS: as [`CALLFLOW_PUT`]. ARGV: id, owner.
const CALLFLOW_DELETE: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return 0
end
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old then
  for _, number in ipairs(cjson.decode(old)) do
    if redis.call('HGET', KEYS[3], number) == ARGV[2] then
      redis.call('HDEL', KEYS[3], number)
    end
  end
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[2])
if redis.call('HDEL', KEYS[5], ARGV[2]) == 1 then
  redis.call('INCR', KEYS[6])
end
return 1
";

/// `{'exact', callflow JSON}` for the first form that is some (matching) callflow's number,
/// else `{'miss', patterns version}`.
/// KEYS: numbers hash, patterns version. ARGV: callflows key prefix, filter ('1'/'0'), account,
/// forms….
const CALLFLOW_RESOLVE: &str = r"
for i = 4, #ARGV do
  local owner = redis.call('HGET', KEYS[1], ARGV[i])
  if owner then
    local pair = cjson.decode(owner)
    if ARGV[2] == '0' or pair[1] == ARGV[3] then
      local flow = redis.call('HGET', ARGV[1] .. pair[1], pair[2])
      if flow then
        return {'exact', flow}
      end
    end
  end
end
return {'miss', redis.call('GET', KEYS[2]) or '0'}
";

/// `[version, owner, patterns JSON, …]`, read together so the cache is tagged with the version
/// its contents belong to. KEYS: patterns hash, patterns version.
const CALLFLOW_PATTERNS: &str = r"
local all = redis.call('HGETALL', KEYS[1])
table.insert(all, 1, redis.call('GET', KEYS[2]) or '0')
return all
";

/// Shared by the debug scripts. A debug call's key part `ck` is `<len>:<account>:<call>` (the
/// length keeps accounts and calls with ':' apart); its member `g` in the debug-calls zset
/// (scored by last append) is `<len>:<account>:<created as 16 hex><call>`, whose tail after the
/// account is its member in the account's index (lexicographic = by creation time, then id).
/// KEYS[1] is the debug-calls zset, KEYS[2] the ck → g hash; ARGV[1] the key prefix (ending in
/// ':'), ARGV[2] the retention in ms.
macro_rules! debug_prelude {
    () => {
        concat!(
            now_ms!(),
            r"
local prefix = ARGV[1]
local retention = tonumber(ARGV[2])
local function forget(g)
  local colon = string.find(g, ':', 1, true)
  local len = tonumber(string.sub(g, 1, colon - 1))
  local account = string.sub(g, colon + 1, colon + len)
  local member = string.sub(g, colon + len + 2)
  local ck = len .. ':' .. account .. ':' .. string.sub(member, 17)
  redis.call('DEL', prefix .. 'debug-summary:' .. ck, prefix .. 'debug-entries:' .. ck)
  redis.call('ZREM', prefix .. 'debug-index:' .. account, member)
  redis.call('ZREM', KEYS[1], g)
  if redis.call('HGET', KEYS[2], ck) == g then
    redis.call('HDEL', KEYS[2], ck)
  end
end
-- The data keys expire by themselves (PEXPIRE); this removes what indexes them, a bounded
-- number per call so no script runs long.
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - retention, 'LIMIT', 0, 1000)
for _, g in ipairs(expired) do
  forget(g)
end
"
        )
    };
}

/// How many entries were dropped (beyond the per-call bound).
/// KEYS: debug-calls zset, ck → g hash, summary hash, entries list, account index zset.
/// ARGV: prefix, retention ms, max entries per call, max calls, ck, `<len>:<account>:`, call id,
/// node, first entry's created ms, its 16-hex form, entry count, then per entry: JSON,
/// iteration, has uri, uri, has status, status, has error.
const DEBUG_APPEND: &str = concat!(
    debug_prelude!(),
    r"
local max_entries = tonumber(ARGV[3])
local g = redis.call('HGET', KEYS[2], ARGV[5])
if g and redis.call('EXISTS', KEYS[3]) == 0 then
  -- Expired before the purge reached it: start the call over.
  forget(g)
  g = false
end
local n = tonumber(ARGV[11])
local room = max_entries - redis.call('LLEN', KEYS[4])
if room < 0 then room = 0 end
local take = math.min(n, room)
if take == 0 then
  return n
end
if not g then
  local member = ARGV[10] .. ARGV[7]
  g = ARGV[6] .. member
  redis.call('HSET', KEYS[3], 'member', member, 'created', ARGV[9], 'iteration', 0, 'errors', 0)
  redis.call('ZADD', KEYS[5], 0, member)
  redis.call('HSET', KEYS[2], ARGV[5], g)
end
redis.call('ZADD', KEYS[1], now, g)
local iteration = tonumber(redis.call('HGET', KEYS[3], 'iteration')) or 0
for i = 1, take do
  local o = 11 + (i - 1) * 7
  redis.call('RPUSH', KEYS[4], ARGV[o + 1])
  local it = tonumber(ARGV[o + 2])
  if it > iteration then iteration = it end
  if ARGV[o + 3] == '1' then redis.call('HSETNX', KEYS[3], 'uri', ARGV[o + 4]) end
  if ARGV[o + 5] == '1' then redis.call('HSET', KEYS[3], 'status', ARGV[o + 6]) end
  if ARGV[o + 7] == '1' then redis.call('HSET', KEYS[3], 'errors', 1) end
end
redis.call('LTRIM', KEYS[4], 0, max_entries - 1)
redis.call('HSET', KEYS[3], 'node', ARGV[8], 'iteration', iteration)
redis.call('PEXPIRE', KEYS[3], retention)
redis.call('PEXPIRE', KEYS[4], retention)
local max_calls = tonumber(ARGV[4])
while redis.call('ZCARD', KEYS[1]) > max_calls do
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0)
  if #oldest == 0 then break end
  forget(oldest[1])
end
return n - take
"
);

/// Flat `[member, created, uri, status, node, iteration, errors]*`, newest first, at most
/// ARGV[4], starting below ARGV[3] (`+` or `(<member>`); skips members whose call expired.
/// KEYS: debug-calls zset, ck → g hash, account index zset.
/// ARGV: prefix, retention ms, upper bound, count, the account's summary key prefix.
const DEBUG_LIST: &str = concat!(
    debug_prelude!(),
    r"
local out = {}
local found = 0
local want = tonumber(ARGV[4])
local upper = ARGV[3]
while found < want do
  local batch = redis.call('ZREVRANGEBYLEX', KEYS[3], upper, '-', 'LIMIT', 0, want - found)
  if #batch == 0 then break end
  for _, member in ipairs(batch) do
    local s = redis.call('HMGET', ARGV[5] .. string.sub(member, 17),
      'member', 'created', 'uri', 'status', 'node', 'iteration', 'errors')
    if s[1] == member then
      found = found + 1
      for k = 1, 7 do
        table.insert(out, s[k])
      end
    end
    upper = '(' .. member
  end
end
return out
"
);

/// Every script, hashed once: EVALSHA first, EVAL (which also loads it) when the server does
/// not know it (a restart or SCRIPT FLUSH).
#[derive(Debug)]
pub(crate) struct Scripts {
    pub claim: Script,
    pub adopt: Script,
    pub checkpoint: Script,
    pub release: Script,
    pub finish: Script,
    pub calls: Script,
    pub heartbeat: Script,
    pub leave: Script,
    pub live: Script,
    pub callflow_put: Script,
    pub callflow_delete: Script,
    pub callflow_resolve: Script,
    pub callflow_patterns: Script,
    pub debug_append: Script,
    pub debug_list: Script,
}

impl Scripts {
    pub(crate) fn new() -> Scripts {
        Scripts {
            claim: Script::new(CLAIM),
            adopt: Script::new(ADOPT),
            checkpoint: Script::new(CHECKPOINT),
            release: Script::new(RELEASE),
            finish: Script::new(FINISH),
            calls: Script::new(CALLS),
            heartbeat: Script::new(HEARTBEAT),
            leave: Script::new(LEAVE),
            live: Script::new(LIVE),
            callflow_put: Script::new(CALLFLOW_PUT),
            callflow_delete: Script::new(CALLFLOW_DELETE),
            callflow_resolve: Script::new(CALLFLOW_RESOLVE),
            callflow_patterns: Script::new(CALLFLOW_PATTERNS),
            debug_append: Script::new(DEBUG_APPEND),
            debug_list: Script::new(DEBUG_LIST),
        }
    }
}
