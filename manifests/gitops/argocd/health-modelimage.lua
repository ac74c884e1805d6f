-- Argo CD health check for edgeferry.io/ModelImage.
-- argocd-cm: resource.customizations.health.edgeferry.io_ModelImage (see argocd-cm.yaml).
--
-- Healthy: admitted and pushed (Ready=True). Progressing: linting, building, smoke testing,
-- scanning or pushing (Reconciling=True), or a spec change not yet observed. Degraded: blocked by
-- the gate (vulnerabilities, failed smoke test) or failed in a way that needs a spec change
-- (Stalled=True); the message is the operator's, which says what to change.

-- BEGIN edgeferry kstatus: shared by health-modelimage.lua, health-edgetarget.lua and
-- health-modeldeployment.lua, byte for byte (tests/unit/test_argocd_health.py checks). Argo CD
-- runs each script alone, so the shared part is repeated rather than required.
--
-- kstatus rules, in order: no status yet, or a status about an older generation -> Progressing;
-- Stalled=True -> Degraded (the operator gave up until something changes); Reconciling=True ->
-- Progressing; Ready=True -> Healthy; anything else -> Progressing with Ready's message.
-- Only the Lua 5.1 subset (Argo CD's gopher-lua) and no library beyond string formatting.
local function condition(o, wanted)
  if o.status == nil or o.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(o.status.conditions) do
    if c.type == wanted then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function message_of(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local function observed(o)
  if o.status == nil then
    return false, "Waiting for edgeferry to report status"
  end
  local generation = o.metadata.generation
  local seen = o.status.observedGeneration
  if generation ~= nil and (seen == nil or seen < generation) then
    return false, string.format("Waiting for edgeferry to observe generation %d", generation)
  end
  return true, nil
end

local function kstatus(o)
  local current, waiting = observed(o)
  if not current then
    return {status = "Progressing", message = waiting}
  end
  local ready = condition(o, "Ready")
  local stalled = condition(o, "Stalled")
  if is_true(stalled) then
    return {status = "Degraded", message = message_of(stalled, message_of(ready, "Stalled"))}
  end
  local reconciling = condition(o, "Reconciling")
  if is_true(reconciling) then
    return {status = "Progressing", message = message_of(reconciling, message_of(ready, "Reconciling"))}
  end
  if is_true(ready) then
    return {status = "Healthy", message = message_of(ready, "Ready")}
  end
  return {status = "Progressing", message = message_of(ready, "Waiting for the Ready condition")}
end
-- END edgeferry kstatus

return kstatus(obj)
