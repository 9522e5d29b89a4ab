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

// limiterScript is ratelimit.go's and window.go's logic over one hash
// per limiter, made cheap: a decision reads and writes a few fields, not
// the whole window.
//
// Window W (m, d, M, D: the rpm, rpd, tpm and tpd windows) keeps a field
// W<epoch> per bucket it counts, Ws the sum of those buckets and Wc the
// epoch it is counted up to (the newest it has seen); every bucket field
// lies in [Wc-60, Wc], the memory window's span. Moving Wc on to the
// current epoch subtracts and deletes the buckets that left, each once:
// at most 61 however long the window slept, about one a second under
// load. mx is the oldest m bucket that holds a request (0: none, -1: to
// find again), for when the oldest counted request leaves. ts and tn are
// the newest time a call brought. A window whose cap is 0 is not read.
// Only a refusal reads the buckets (to say when the request fits), from
// the oldest, 16 at a time.
//
// A bucket holds at most 2^47, so a sum of 61 stays below 2^53 and exact
// in Lua's doubles; numbers go to HSET as they are (Redis writes them
// back exactly). The TTL (a minute window's 125 s, 25 h with a day cap)
// is set when the time moves to a new second or a bucket is made, not on
// every call; a minute-only call never shortens a day's.
//
// KEYS[1] the hash. ARGV: op (check, reserve, settle, cancel, used), now
// s, now ns, rpm, rpd, tpm, tpd, n (tokens, or the settled delta), the
// reservation's s (settle); or merge, latest s, latest ns, add or max,
// then field and count pairs: a replica's own counts, added (Redis lost
// its data) or kept at the larger. Reply: ok, at s, at ns (-1: never),
// the minute window's requests (-1: not read) and tokens, and when the
// oldest counted request leaves the minute window (s, 0 if none).
var limiterScript = redis.NewScript(`
local k, op = KEYS[1], ARGV[1]
local s, ns = tonumber(ARGV[2]), tonumber(ARGV[3])
local B, MAXC = 60, 140737488355328
local W, width = {'m', 'd', 'M', 'D'}, {1, 1440, 1, 1440}
local SUM, THRU = {'ms', 'ds', 'Ms', 'Ds'}, {'mc', 'dc', 'Mc', 'Dc'}
-- use: the windows this call reads (a cap of 0 is not read; settling
-- reads the minute requests for the reply, not the day's).
local use, cap, amt, n, as = {}, {}, {}, 0, nil
if op == 'merge' then
  local idx = {m = 1, d = 2, M = 3, D = 4}
  for j = 5, #ARGV, 2 do use[idx[ARGV[j]:sub(1, 1)]] = true end
elseif op == 'used' then
  use = {true, false, true, false}
else
  n = tonumber(ARGV[8])
  amt = {1, 1, n, n}
  for i = 1, 4 do
    if ARGV[3 + i] ~= '0' and (op ~= 'settle' or i ~= 2) then use[i], cap[i] = true, tonumber(ARGV[3 + i]) end
  end
  if op == 'settle' then as = tonumber(ARGV[9]) end
end
-- got holds the fields read (false: absent); need queues a field for
-- the next get, which reads the queue in one HMGET. The first read: the
-- time, mx, each window's sum and epoch, and the bucket the op likely
-- changes (the time may yet be clamped to another).
local got, queue, guess, ge = {}, {'ts', 'tn', 'mx'}, {}, {}
for i = 1, 4 do
  if use[i] then
    queue[#queue + 1] = SUM[i]
    queue[#queue + 1] = THRU[i]
    if op == 'reserve' or op == 'cancel' then
      ge[i] = math.floor(s / width[i])
      guess[i] = W[i] .. ge[i]
      queue[#queue + 1] = guess[i]
    elseif as and i > 2 then
      queue[#queue + 1] = W[i] .. math.floor(as / width[i])
    end
  end
end
local function get()
  if #queue == 0 then return end
  local v = redis.call('HMGET', k, unpack(queue))
  for j = 1, #queue do got[queue[j]] = v[j] end
  queue = {}
end
local function need(f)
  if got[f] == nil then queue[#queue + 1] = f end
end
get()
local ls, ln = tonumber(got.ts) or 0, tonumber(got.tn) or 0
local write, ttl, created = {}, false, false
if op ~= 'cancel' then
  if s < ls or (s == ls and ns < ln) then
    s, ns = ls, ln
  elseif op ~= 'used' then
    write, ttl = {'ts', s, 'tn', ns}, s > ls
  end
end
-- Second read, when needed: the buckets that left each window, and the
-- current bucket (name) if the first read missed it.
local cur, name, sum, thru, fresh, moved, dirty = {}, {}, {}, {}, {}, {}, {}
for i = 1, 4 do
  if use[i] then
    cur[i] = math.floor(s / width[i])
    if ge[i] == cur[i] then
      name[i] = guess[i]
    elseif op == 'reserve' or (as and n > 0) then
      name[i] = W[i] .. cur[i]
      need(name[i])
    end
    sum[i], thru[i] = tonumber(got[SUM[i]]), tonumber(got[THRU[i]])
    if not thru[i] then
      sum[i], thru[i], fresh[i] = 0, cur[i], true
    elseif thru[i] < cur[i] then
      for e = thru[i] - B, math.min(thru[i], cur[i] - B - 1) do need(W[i] .. e) end
    end
  end
end
get()
local old = {}
for i = 1, 4 do
  if use[i] and thru[i] < cur[i] then
    for e = thru[i] - B, math.min(thru[i], cur[i] - B - 1) do
      local f = W[i] .. e
      local v = tonumber(got[f])
      if v then sum[i], old[#old + 1] = sum[i] - v, f end
    end
    thru[i], moved[i] = cur[i], true
  end
end
-- put sets window i's bucket e, which lies in the window and whose field
-- f has been read, to v.
local function put(i, e, f, v)
  local o = tonumber(got[f])
  if not o then o, created = 0, true end
  v = math.max(0, math.min(MAXC, v))
  sum[i], got[f], dirty[i] = sum[i] + v - o, v, true
  write[#write + 1] = f
  write[#write + 1] = v
end
-- scan calls fn(e, count) on window i's buckets e0 to e1, oldest first,
-- reading them 16 at a time, until fn returns true.
local function scan(i, e0, e1, fn)
  for lo = e0, e1, 16 do
    local hi = math.min(e1, lo + 15)
    for e = lo, hi do need(W[i] .. e) end
    get()
    for e = lo, hi do
      if fn(e, tonumber(got[W[i] .. e]) or 0) then return end
    end
  end
end
local mx, mxDirty = 0, false
if use[1] and not fresh[1] then
  mx = tonumber(got.mx)
  if not mx or mx < 0 or (mx > 0 and mx < thru[1] - B) then
    mx, mxDirty = 0, true
    scan(1, thru[1] - B, thru[1], function(e, v)
      if v > 0 then mx = e return true end
    end)
  end
end
local ok, at = true, nil
if op == 'check' or op == 'reserve' then
  -- window.go's freeAt: the earliest time amt[i] more fit under cap[i]
  -- (-1: never). Buckets before mx hold no request.
  for i = 1, 4 do
    if ok and use[i] then
      if amt[i] > cap[i] then
        ok, at = false, -1
      elseif sum[i] + amt[i] > cap[i] then
        local u, from, t = sum[i], cur[i] - B, (cur[i] + B + 1) * width[i]
        if i == 1 and mx > 0 then from = mx end
        scan(i, from, cur[i], function(e, v)
          u = u - v
          if u + amt[i] <= cap[i] then t = (e + B + 1) * width[i] return true end
        end)
        if not at or t > at then at = t end
      end
    end
  end
  if at then ok = false end
  if ok and op == 'reserve' then
    for i = 1, 4 do
      if use[i] then put(i, cur[i], name[i], (tonumber(got[name[i]]) or 0) + amt[i]) end
    end
    if use[1] and mx == 0 then mx, mxDirty = cur[1], true end
  end
elseif op == 'settle' then
  for i = 3, 4 do
    if use[i] then
      local e = math.floor(as / width[i])
      local f = W[i] .. e
      local v = e >= thru[i] - B and tonumber(got[f])
      if v then
        put(i, e, f, v + n)
      elseif n > 0 then
        put(i, cur[i], name[i], (tonumber(got[name[i]]) or 0) + n)
      end
    end
  end
elseif op == 'cancel' then
  -- The bucket of the reservation's own time, if it still counts.
  for i = 1, 4 do
    local v = use[i] and tonumber(got[name[i]])
    if v and cur[i] >= thru[i] - B then
      put(i, cur[i], name[i], v - amt[i])
      if i == 1 and cur[1] == mx and got[name[1]] == 0 then mx, mxDirty = -1, true end
    end
  end
elseif op == 'merge' then
  local add = ARGV[4] == 'add'
  for j = 5, #ARGV, 2 do need(ARGV[j]) end
  get()
  for j = 5, #ARGV, 2 do
    local f = ARGV[j]
    local i = ({m = 1, d = 2, M = 3, D = 4})[f:sub(1, 1)]
    local e, v = tonumber(f:sub(2)), tonumber(ARGV[j + 1])
    -- A replica counts up to its latest time, which the clamp brought
    -- Redis's to; what left the window is dropped.
    if e >= cur[i] - B and e <= cur[i] then
      local o = tonumber(got[f]) or 0
      if add then v = o + v elseif v < o then v = o end
      put(i, e, f, v)
    end
  end
  if use[1] then mx, mxDirty = -1, true end
end
if op ~= 'used' then
  for i = 1, 4 do
    if dirty[i] or moved[i] then
      write[#write + 1] = SUM[i]
      write[#write + 1] = sum[i]
    end
    if moved[i] or (fresh[i] and dirty[i]) then
      write[#write + 1] = THRU[i]
      write[#write + 1] = thru[i]
    end
  end
  if mxDirty then
    write[#write + 1] = 'mx'
    write[#write + 1] = mx
  end
  if #old > 0 then redis.call('HDEL', k, unpack(old)) end
  if #write > 0 then redis.call('HSET', k, unpack(write)) end
  if ttl or created then
    -- A day bucket counts for up to 61 x 24 minutes; a minute one for 61s.
    if use[2] or use[4] then
      redis.call('PEXPIRE', k, 90000000)
    elseif redis.call('PTTL', k) < 125000 then
      redis.call('PEXPIRE', k, 125000)
    end
  end
end
local req, exit = -1, 0
if use[1] and op ~= 'cancel' then
  req = sum[1]
  if mx > 0 then exit = mx + B + 1 end
end
local rs, rn = s, ns
if not ok then rs, rn = at, 0 end
return {ok and 1 or 0, rs, rn, req, use[3] and sum[3] or 0, exit}
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
