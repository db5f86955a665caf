"""The Lua scripts RedisL2 runs on the server: one round trip each, atomic, and each reads
what it finds as untrusted (a key of another type, a counter that is not a number) without
erroring on it."""

from __future__ import annotations

# Server-side scripts. Each reads what it needs as untrusted (a key of another type, a counter
# that is not a number) and never errors on it.
_STRING = ("local function str(k) if redis.call('TYPE', k)['ok'] == 'string' then "
           "return redis.call('GET', k) end return false end ")
_GEN_READ = (
    "local function num(x) return x and string.len(x) <= 15 and "
    "string.match(x, '^%d+$') ~= nil end "
    "local function gen_read(key, new) "
    "local t = redis.call('TYPE', key)['ok'] "
    "if t == 'hash' then local v = redis.call('HMGET', key, 'e', 'g', 'hard') "
    "if v[1] and string.len(v[1]) == 16 and string.match(v[1], '^[0-9a-f]+$') and num(v[2]) "
    "and ((not v[3]) or num(v[3])) then return {v[1], v[2], v[3] or '0', 'ok'} end end "
    "local how = 'new' if t ~= 'none' then how = 'repaired' end "
    "redis.call('DEL', key) redis.call('HSET', key, 'e', new, 'g', '0', 'hard', '0') "
    "return {new, '0', '0', how} end "
)
_GENERATION = _GEN_READ + "return gen_read(KEYS[1], ARGV[1])"
_BUMP = _GEN_READ + (
    "local r = gen_read(KEYS[1], ARGV[1]) "
    "local g = redis.call('HINCRBY', KEYS[1], 'g', 1) local h = r[3] "
    "if ARGV[2] == '1' then redis.call('HSET', KEYS[1], 'hard', g) h = tostring(g) end "
    "return {r[1], tostring(g), h}"
)
# KEYS: pointer, lease, generation. ARGV: new pointer, token ('' = none), created_ms, px, epoch,
# number. Written only if the generation is still (epoch, >= its number), and the token holds
# the lease or the copy is newer than the stored one.
_SWITCH = _STRING + (
    "if redis.call('TYPE', KEYS[3])['ok'] ~= 'hash' then return 'invalidated' end "
    "local v = redis.call('HMGET', KEYS[3], 'e', 'g') "
    "if v[1] ~= ARGV[5] or not tonumber(v[2]) or tonumber(ARGV[6]) < tonumber(v[2]) then "
    "return 'invalidated' end "
    "local holder = false "
    "if ARGV[2] ~= '' then local l = str(KEYS[2]) "
    "holder = l and string.sub(l, 1, string.len(ARGV[2]) + 1) == ARGV[2] .. ' ' end "
    "local cur = str(KEYS[1]) "
    "if not holder and cur then "
    "local e, n, c = string.match(cur, '^[^:]*:[^:]*:([0-9a-f]+):(%d+):(%d+)$') "
    "if e == ARGV[5] then n = tonumber(n) c = tonumber(c) local g = tonumber(ARGV[6]) "
    "if n > g or (n == g and c >= tonumber(ARGV[3])) then return 'fenced' end end end "
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4]) "
    "return 'written:' .. (cur or '')"
)
# KEYS: lease, fence counter. ARGV: the value (with "fence":0), px. A lease that never expires
# or is not a string is nobody's: removed. Returns {the new fencing number or 0 if held, removed}.
_ACQUIRE = (
    "local t = redis.call('TYPE', KEYS[1])['ok'] local removed = 0 "
    "if t ~= 'none' and (t ~= 'string' or redis.call('PTTL', KEYS[1]) == -1) then "
    "redis.call('DEL', KEYS[1]) removed = 1 end "
    "if not redis.call('SET', KEYS[1], 'x', 'NX', 'PX', ARGV[2]) then return {0, removed} end "
    "local f = false if redis.call('TYPE', KEYS[2])['ok'] == 'string' then "
    "f = redis.call('GET', KEYS[2]) end "
    "if not (f and string.match(f, '^%d+$') and string.len(f) <= 15) then "
    "redis.call('SET', KEYS[2], '0') end "
    "local fence = redis.call('INCR', KEYS[2]) "
    "local value = string.gsub(ARGV[1], '\"fence\":0,', '\"fence\":' .. fence .. ',', 1) "
    "redis.call('SET', KEYS[1], value, 'KEEPTTL') return {fence, removed}"
)
# The lease value starts with "<token> ": compare it without parsing, then act.
_LEASE_HELD = _STRING + "local v = str(KEYS[1]) " \
    "if not v or string.sub(v, 1, string.len(ARGV[1]) + 1) ~= ARGV[1] .. ' ' then return 0 end "
_LEASE_UPDATE = _LEASE_HELD + (
    "if ARGV[3] == '' then redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL') "
    "else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end return 1"
)
_LEASE_RELEASE = _LEASE_HELD + "return redis.call('DEL', KEYS[1])"
_DELETE_IF = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) " \
    "end return 0"
# The counter as it is, or false when absent or of another type (a layered tier seeds it).
_GEN_PEEK = ("if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return false end "
             "return redis.call('HMGET', KEYS[1], 'e', 'g', 'hard')")
# ARGV: epoch, number, floor, force. Set the counter to ARGV unless it is valid and (not
# force, or force and already at least as far on the same epoch); return what it holds.
_GEN_SEED = _GEN_READ + (
    "local t = redis.call('TYPE', KEYS[1])['ok'] "
    "if t == 'hash' then local v = redis.call('HMGET', KEYS[1], 'e', 'g', 'hard') "
    "if v[1] and string.len(v[1]) == 16 and string.match(v[1], '^[0-9a-f]+$') and num(v[2]) "
    "and ((not v[3]) or num(v[3])) then "
    "if ARGV[4] ~= '1' then return {v[1], v[2], v[3] or '0'} end "
    "if v[1] == ARGV[1] and tonumber(v[2]) >= tonumber(ARGV[2]) "
    "and tonumber(v[3] or '0') >= tonumber(ARGV[3]) then return {v[1], v[2], v[3] or '0'} end "
    "end end "
    "redis.call('DEL', KEYS[1]) "
    "redis.call('HSET', KEYS[1], 'e', ARGV[1], 'g', ARGV[2], 'hard', ARGV[3]) "
    "return {ARGV[1], ARGV[2], ARGV[3]}"
)
