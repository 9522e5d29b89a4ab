package engine

import "github.com/redis/go-redis/v9"

// The Lua scripts of the Redis backend: each is one whole decision, made
// atomically inside Redis in one round trip (EVALSHA, falling back to
// EVAL after a restart emptied the script cache). Go never reads a
// record, decides and writes it back.
//
// Times cross as two integers, unix seconds and nanoseconds: Lua numbers
// are doubles, exact to 2^53, and a unix time in ns is past that. Every
// bucket boundary of the windows is a whole second (a minute bucket is
// 1s, a day bucket 1440s), so the scripts count in seconds and compare
// (s, ns) pairs where the memory limiter compares ns. Counts are bounded
// to 2^50 before they are sent, so they stay exact.

// limiterScript is limiter.go's and window.go's logic over one hash per
// limiter: fields m<epoch>, d<epoch>, M<epoch>, D<epoch> hold the rpm,
// rpd, tpm and tpd buckets, ts and tn the newest time a call brought.
//
// KEYS[1] the hash. ARGV: op (check, reserve, settle, cancel, used), now
// s, now ns, rpm, rpd, tpm, tpd, n (tokens, or the settled delta), the
// reservation's s (settle). Reply: ok, at s, at ns (-1: never), requests
// and tokens in the minute windows, and when the oldest counted request
// leaves the minute window (s, 0 if none).
var limiterScript = redis.NewScript(`
local k, op = KEYS[1], ARGV[1]
local s, ns = tonumber(ARGV[2]), tonumber(ARGV[3])
local cap = {tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])}
local n = tonumber(ARGV[8])
local W, width, idx = {'m', 'd', 'M', 'D'}, {1, 1440, 1, 1440}, {m = 1, d = 2, M = 3, D = 4}
local B, MAXC = 60, 1125899906842624
local h = redis.call('HGETALL', k)
local ls, ln = 0, 0
for i = 1, #h, 2 do
  if h[i] == 'ts' then ls = tonumber(h[i + 1]) elseif h[i] == 'tn' then ln = tonumber(h[i + 1]) end
end
local write = {}
if op ~= 'cancel' then
  if s < ls or (s == ls and ns < ln) then
    s, ns = ls, ln
  elseif op ~= 'used' then
    write = {'ts', string.format('%.0f', s), 'tn', string.format('%.0f', ns)}
  end
end
local cur = {}
for i = 1, 4 do cur[i] = math.floor(s / width[i]) end
-- win[i][epoch] is a bucket's count; old lists the buckets that left
-- their window, to delete with the next write.
local win, old, day = {{}, {}, {}, {}}, {}, cap[2] > 0 or cap[4] > 0
for j = 1, #h, 2 do
  local i = idx[h[j]:sub(1, 1)]
  if i then
    local e = tonumber(h[j]:sub(2))
    if e < cur[i] - B then
      old[#old + 1] = h[j]
    else
      win[i][e] = tonumber(h[j + 1])
      day = day or i == 2 or i == 4
    end
  end
end
local function put(i, e, v)
  win[i][e] = math.max(0, math.min(MAXC, v))
  write[#write + 1] = W[i] .. e
  write[#write + 1] = string.format('%.0f', win[i][e])
end
local function used(i)
  local u = 0
  for e = cur[i] - B, cur[i] do u = u + (win[i][e] or 0) end
  return u
end
local function freeAt(i, need, limit)
  if need > limit then return -1 end
  local u = used(i)
  if u + need <= limit then return nil end
  for e = cur[i] - B, cur[i] do
    u = u - (win[i][e] or 0)
    if u + need <= limit then return (e + B + 1) * width[i] end
  end
  return (cur[i] + B + 1) * width[i]
end
local function addAt(i, e, v)
  if win[i][e] and e >= cur[i] - B then
    put(i, e, win[i][e] + v)
  elseif v > 0 then
    put(i, cur[i], (win[i][cur[i]] or 0) + v)
  end
end
local amt = {1, 1, n, n}
local ok, at = true, nil
if op == 'check' or op == 'reserve' then
  for i = 1, 4 do
    if ok and cap[i] > 0 then
      local t = freeAt(i, amt[i], cap[i])
      if t == -1 then ok, at = false, -1
      elseif t and (not at or t > at) then at = t end
    end
  end
  if at then ok = false end
  if ok and op == 'reserve' then
    for i = 1, 4 do
      if cap[i] > 0 then addAt(i, cur[i], amt[i]) end
    end
  end
elseif op == 'settle' then
  local as = tonumber(ARGV[9])
  for i = 3, 4 do
    if cap[i] > 0 then addAt(i, math.floor(as / width[i]), n) end
  end
elseif op == 'cancel' then
  for i = 1, 4 do
    if cap[i] > 0 then addAt(i, cur[i], -amt[i]) end
  end
end
if #write > 0 then
  if #old > 0 then redis.call('HDEL', k, unpack(old)) end
  redis.call('HSET', k, unpack(write))
  -- A day bucket counts for up to 61 x 24 minutes; a minute one for 61s.
  redis.call('PEXPIRE', k, day and 90000000 or 125000)
end
local exit = 0
for e = cur[1] - B, cur[1] do
  if (win[1][e] or 0) > 0 then exit = e + B + 1; break end
end
local as, an = s, ns
if not ok then as, an = at, 0 end
return {ok and 1 or 0, as, an, used(1), used(3), exit}
`)

// mergeScript folds a replica's own counts into a limiter's hash when
// Redis comes back: added when Redis lost its data (every replica then
// adds its own share), else kept at the larger of the two.
//
// KEYS[1] the hash. ARGV: add or max, latest s, latest ns, then field and
// count pairs.
var mergeScript = redis.NewScript(`
local k, add = KEYS[1], ARGV[1] == 'add'
local s, ns = tonumber(ARGV[2]), tonumber(ARGV[3])
local cur = redis.call('HMGET', k, 'ts', 'tn')
local ls, ln = tonumber(cur[1]) or 0, tonumber(cur[2]) or 0
if s > ls or (s == ls and ns > ln) then
  redis.call('HSET', k, 'ts', string.format('%.0f', s), 'tn', string.format('%.0f', ns))
end
local day = false
for i = 4, #ARGV, 2 do
  local c, v = tonumber(redis.call('HGET', k, ARGV[i]) or '0'), tonumber(ARGV[i + 1])
  if add then c = c + v elseif v > c then c = v end
  redis.call('HSET', k, ARGV[i], string.format('%.0f', math.min(c, 1125899906842624)))
  local w = ARGV[i]:sub(1, 1)
  day = day or w == 'd' or w == 'D'
end
redis.call('PEXPIRE', k, day and 90000000 or 125000)
return 1
`)

// cooldownScript is cooldown.go's logic over one hash: us, un (until),
// r (reason), v (version, counting changes).
//
// KEYS[1] the hash. ARGV: op (start, lift), until s, until ns, reason,
// TTL ms, channel, name. A change is published on the channel. Reply:
// until s, until ns, reason, version.
var cooldownScript = redis.NewScript(`
local k, op = KEYS[1], ARGV[1]
local es, en = tonumber(ARGV[2]), tonumber(ARGV[3])
local c = redis.call('HMGET', k, 'us', 'un', 'r', 'v')
local us, un, r, v = tonumber(c[1]) or 0, tonumber(c[2]) or 0, tonumber(c[3]) or 0, tonumber(c[4]) or 0
local changed = false
if op == 'start' and (us < es or (us == es and un < en)) then
  us, un, r, changed = es, en, tonumber(ARGV[4]), true
elseif op == 'lift' and us == es and un == en and (us ~= 0 or un ~= 0) then
  us, un, changed = 0, 0, true
end
if changed then
  v = v + 1
  local su, sn = string.format('%.0f', us), string.format('%.0f', un)
  redis.call('HSET', k, 'us', su, 'un', sn, 'r', r, 'v', v)
  redis.call('PEXPIRE', k, ARGV[5])
  redis.call('PUBLISH', ARGV[6], 'c|' .. su .. '|' .. sn .. '|' .. r .. '|' .. v .. '|' .. ARGV[7])
end
return {us, un, r, v}
`)

// breakerScript is breaker.go's logic over one hash: st (0 closed, 1
// open, 2 half-open), f (consecutive failures), us, un (open until, or
// for half-open the probe's deadline), of (open_for, ms), v (version).
// A probe whose replica never reports back is given again after
// open_for, so a replica that died holding it does not close the
// breaker's target for good.
//
// KEYS[1] the hash. ARGV: op (allow, success, failure, get), now s, now
// ns, open until s, open until ns, threshold, open_for ms, channel, name.
// Reply: granted, st, f, us, un, v.
var breakerScript = redis.NewScript(`
local k, op = KEYS[1], ARGV[1]
local s, ns = tonumber(ARGV[2]), tonumber(ARGV[3])
local c = redis.call('HMGET', k, 'st', 'f', 'us', 'un', 'v', 'of')
local st, fl, us, un = tonumber(c[1]) or 0, tonumber(c[2]) or 0, tonumber(c[3]) or 0, tonumber(c[4]) or 0
local v, of = tonumber(c[5]) or 0, tonumber(c[6]) or 0
local granted, changed = 0, false
if op == 'allow' then
  if st == 0 then
    granted = 1
  elseif s > us or (s == us and ns >= un) then
    local t = ns + (of % 1000) * 1000000
    st, granted, changed = 2, 1, true
    us, un = s + math.floor(of / 1000) + math.floor(t / 1000000000), t % 1000000000
  end
elseif op == 'success' then
  if st ~= 0 or fl ~= 0 then st, fl, changed = 0, 0, true end
elseif op == 'failure' then
  local ts, tn = tonumber(ARGV[4]), tonumber(ARGV[5])
  if st == 2 then
    st, us, un = 1, ts, tn
  else
    fl = fl + 1
    if fl >= tonumber(ARGV[6]) and st == 0 then st, fl, us, un = 1, 0, ts, tn end
  end
  of, changed = tonumber(ARGV[7]), true
end
if changed then
  v = v + 1
  local su, sn = string.format('%.0f', us), string.format('%.0f', un)
  redis.call('HSET', k, 'st', st, 'f', fl, 'us', su, 'un', sn, 'v', v, 'of', of)
  redis.call('PEXPIRE', k, 86400000)
  redis.call('PUBLISH', ARGV[8], 'b|' .. st .. '|' .. fl .. '|' .. su .. '|' .. sn .. '|' .. v .. '|' .. ARGV[9])
end
return {granted, st, fl, us, un, v}
`)

// generationScript returns the id of the data Redis holds, setting
// ARGV[1] when there is none: a changed id says Redis lost its data.
var generationScript = redis.NewScript(`
local g = redis.call('GET', KEYS[1])
if not g then
  redis.call('SET', KEYS[1], ARGV[1])
  g = ARGV[1]
end
return g
`)
