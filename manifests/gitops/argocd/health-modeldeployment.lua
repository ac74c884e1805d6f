-- Argo CD health check for edgeferry.io/ModelDeployment.
-- argocd-cm: resource.customizations.health.edgeferry.io_ModelDeployment (see argocd-cm.yaml).
--
-- Healthy: every compatible target runs the admitted digest (Ready=True). Progressing: waves
-- rolling out, waiting for deferred targets, or waiting for the image to be admitted.
-- Suspended: spec.rollout.paused. Degraded: a wave failed (Degraded=True, rolled back) or the
-- rollout stalled (Stalled=True, e.g. its image is blocked or its selector matches no target).
-- A Degraded message starts with status.servingTargets, so "rolled back, still serving the
-- previous release" reads apart from "down".

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

local current = observed(obj)
if current and obj.spec ~= nil and obj.spec.rollout ~= nil and obj.spec.rollout.paused == true then
  return {status = "Suspended", message = obj.status.message or "Rollout paused (spec.rollout.paused)"}
end
local degraded = condition(obj, "Degraded")
if current and is_true(degraded) then
  local message = message_of(degraded, "Rollout degraded")
  if obj.status.servingTargets ~= nil then
    message = string.format("%s targets serve (any release). %s", obj.status.servingTargets, message)
  end
  return {status = "Degraded", message = message}
end
return kstatus(obj)
