//! Lua scripts for the atomic room changes. Each touches only one room's keys (one
//! hash tag, one Cluster slot) and publishes its announcement in the same step, with
//! PUBLISH or, on Cluster, SPUBLISH (passed in as the last argument).

use crate::operation::Operation;

/// A Lua script and the operation it is timed and labelled as.
#[derive(Debug, Clone, Copy)]
pub struct Script {
    pub operation: Operation,
    pub source: &'static str,
}

/// KEYS: members, meta. ARGV: peer, record, capacity, token hash or "", channel,
/// announcement, publish command, now (Unix ms), "1" if only created rooms may be
/// joined, "1" to list the other members. Returns {"ok", token hash or "", expiry
/// (Unix ms) or "", other records (if asked for)...}, {"full"}, {"token"}, {"locked"},
/// {"notfound"}, {"expired"} or {"taken"} (a member with this id is already in the room).
pub const JOIN: Script = Script {
    operation: Operation::Join,
    source: r#"
local meta = redis.call('HMGET', KEYS[2], 'token', 'registered', 'expires', 'capacity', 'locked')
local stored, registered = meta[1], meta[2] == '1'
if meta[5] == '1' then return {'locked'} end
if not registered and ARGV[9] == '1' then return {'notfound'} end
if registered and tonumber(meta[3]) <= tonumber(ARGV[8]) then return {'expired'} end
if stored and stored ~= ARGV[4] then return {'token'} end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return {'taken'} end
local capacity = tonumber(ARGV[3])
if registered and tonumber(meta[4]) > 0 and tonumber(meta[4]) < capacity then capacity = tonumber(meta[4]) end
if redis.call('HLEN', KEYS[1]) >= capacity then return {'full'} end
if not stored and ARGV[4] ~= '' then
  redis.call('HSET', KEYS[2], 'token', ARGV[4])
  stored = ARGV[4]
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local out = {'ok', stored or '', registered and meta[3] or ''}
if ARGV[10] == '1' then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    if all[i] ~= ARGV[1] then out[#out + 1] = all[i + 1] end
  end
end
redis.call(ARGV[7], ARGV[5], ARGV[6])
return out
"#,
};

/// KEYS: members, meta. ARGV: peer, record, token hash or "", channel, announcement,
/// publish command. Writes the member back only if missing. Returns 1 if written.
/// [`LEAVE`] with the record it must still have: the reaper's removals.
pub const LEAVE_IF_UNCHANGED: Script = Script { operation: Operation::LeaveIfUnchanged, source: LEAVE.source };

pub const RESTORE: Script = Script {
    operation: Operation::Restore,
    source: r#"
if ARGV[3] ~= '' then redis.call('HSETNX', KEYS[2], 'token', ARGV[3]) end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call(ARGV[6], ARGV[4], ARGV[5])
  return 1
end
return 0
"#,
};

/// KEYS: members, meta. ARGV: peer, channel, announcement, publish command, and
/// optionally the record the member must still have. Returns 1 if the peer was a member
/// (with that record). An emptied room loses its metadata (its lock), unless it was
/// created through the registry (its record expires by itself).
pub const LEAVE: Script = Script {
    operation: Operation::Leave,
    source: r#"
if ARGV[5] and redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[5] then return 0 end
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('HLEN', KEYS[1]) == 0 and redis.call('HGET', KEYS[2], 'registered') ~= '1' then
  redis.call('DEL', KEYS[2])
end
redis.call(ARGV[4], ARGV[2], ARGV[3])
return 1
"#,
};

/// KEYS: members. ARGV: peer, record, channel, announcement, publish command.
/// Returns 1 if the peer was a member.
pub const UPDATE: Script = Script {
    operation: Operation::Update,
    source: r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call(ARGV[5], ARGV[3], ARGV[4])
return 1
"#,
};

/// KEYS: members, meta. ARGV: peer, record, channel, announcement, publish command,
/// expected record. Replaces a member's record (it moved to another node) if it is
/// still the expected one, and publishes the announcement. Returns {"ok", token hash or
/// "", expiry or "", other records...} as JOIN does, {"gone"} if it is no longer a
/// member, or {"changed"} if its record changed meanwhile.
pub const MOVE: Script = Script {
    operation: Operation::MoveMember,
    source: r#"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return {'gone'} end
if current ~= ARGV[6] then return {'changed'} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local meta = redis.call('HMGET', KEYS[2], 'token', 'registered', 'expires')
local out = {'ok', meta[1] or '', meta[2] == '1' and meta[3] or ''}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i] ~= ARGV[1] then out[#out + 1] = all[i + 1] end
end
redis.call(ARGV[5], ARGV[3], ARGV[4])
return out
"#,
};

/// KEYS: resumable record. ARGV: token hash, node, room field, TTL (ms). Returns 1.
pub const NOTE_RESUMABLE: Script = Script {
    operation: Operation::NoteResumable,
    source: r#"
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'node', ARGV[2], ARGV[3], '1')
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"#,
};

/// KEYS: resumable record. ARGV: token hash, new token hash, node, TTL (ms). If the
/// token matches, hands the record to `node` with the new token, and returns the
/// serving node it had followed by its room fields; otherwise nil. A token works once.
pub const CLAIM_RESUME: Script = Script {
    operation: Operation::ClaimResumable,
    source: r#"
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return false end
local out = {redis.call('HGET', KEYS[1], 'node') or ''}
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(field, 1, 2) == 'r:' then out[#out + 1] = string.sub(field, 3) end
end
redis.call('HSET', KEYS[1], 'token', ARGV[2], 'node', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return out
"#,
};

/// KEYS: resumable record. ARGV: node. Deletes the record unless another node has
/// claimed it. Returns 1 if it was this node's (or there was none).
pub const END_RESUMABLE: Script = Script {
    operation: Operation::EndResumable,
    source: r#"
local node = redis.call('HGET', KEYS[1], 'node')
if node and node ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"#,
};

/// KEYS: members. ARGV: channel, marker, publish command. Returns every record.
pub const SNAPSHOT: Script = Script {
    operation: Operation::Snapshot,
    source: r#"
local records = redis.call('HVALS', KEYS[1])
redis.call(ARGV[3], ARGV[1], ARGV[2])
return records
"#,
};

/// KEYS: members, meta. ARGV: token hash, expires (Unix ms), capacity (0: none),
/// record (JSON), forget at (Unix ms). Creates the room unless it exists (created, or
/// implicitly with members). Returns 1 if created.
pub const CREATE_ROOM: Script = Script {
    operation: Operation::CreateRoom,
    source: r#"
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('HGET', KEYS[2], 'registered') == '1' then return 0 end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'token', ARGV[1], 'registered', '1', 'expires', ARGV[2], 'capacity', ARGV[3], 'record', ARGV[4])
redis.call('PEXPIREAT', KEYS[2], ARGV[5])
return 1
"#,
};
