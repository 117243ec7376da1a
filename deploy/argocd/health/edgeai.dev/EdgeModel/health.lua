-- Argo CD health check for edgeai.dev/EdgeModel.
--
-- Reads what the operator writes: status.observedGeneration and the conditions Ready,
-- Progressing, Degraded and ImagesReady (with reasons such as NoMatchingNodes, InvalidSpec,
-- FellBack, RolledBack, Building, ModelDigestMismatch). Written for the Lua 5.1 dialect Argo CD embeds; uses no library beyond
-- ipairs and string concatenation.
local hs = {}

local function conditionOf(conditions, conditionType)
  if conditions == nil then
    return nil
  end
  for _, condition in ipairs(conditions) do
    if condition.type == conditionType then
      return condition
    end
  end
  return nil
end

local function describe(condition, fallback)
  if condition == nil then
    return fallback
  end
  local text = condition.message
  if text == nil or text == "" then
    text = fallback
  end
  if condition.reason ~= nil and condition.reason ~= "" then
    return condition.reason .. ": " .. text
  end
  return text
end

local function isTrue(condition)
  return condition ~= nil and condition.status == "True"
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local conditions = obj.status.conditions
local ready = conditionOf(conditions, "Ready")
local progressing = conditionOf(conditions, "Progressing")
local degraded = conditionOf(conditions, "Degraded")

-- Images for the spec's revision are being built: what ran before keeps running.
local images = conditionOf(conditions, "ImagesReady")
if images ~= nil and images.status == "False" and images.reason == "Building" then
  hs.status = "Progressing"
  hs.message = describe(images, "Building the model images")
  return hs
end

if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report the Ready condition"
  return hs
end

-- A rollout that failed and was undone: the old version serves, the spec's does not.
-- Degraded first: the operator puts the whole story there (the failed revision, the gate,
-- the revision that serves); Progressing only says the revision will not be retried.
for _, condition in ipairs({degraded, progressing, ready}) do
  if condition ~= nil and condition.reason == "RolledBack" then
    hs.status = "Degraded"
    hs.message = describe(condition, "The rollout failed and was rolled back")
    return hs
  end
end

-- No hardware for a target, an invalid spec, or any other reason but a planned fallback.
if isTrue(degraded) and degraded.reason ~= "FellBack" then
  hs.status = "Degraded"
  hs.message = describe(degraded, "The EdgeModel is degraded")
  return hs
end

local fellBack = isTrue(degraded) and degraded.reason == "FellBack"

-- Ready, yet the operator still watches the new revision for its stabilization window
-- before promoting it to stable: not proven yet, so not Healthy yet. Sync waves and
-- ApplicationSet rollouts wait for Healthy; they must not move on before that window ends.
if isTrue(ready) and isTrue(progressing) then
  hs.status = "Progressing"
  hs.message = progressing.message or "Ready; waiting for the stabilization window"
  if fellBack then
    hs.message = hs.message .. " (on the fallback accelerator)"
  end
  return hs
end

if isTrue(ready) then
  hs.status = "Healthy"
  if fellBack then
    hs.message = "Ready on the fallback accelerator: " .. (degraded.message or "")
  else
    hs.message = ready.message or "All targets are ready"
  end
  return hs
end

hs.status = "Progressing"
if isTrue(progressing) then
  hs.message = progressing.message or "Rolling out"
else
  hs.message = ready.message or "Waiting for the targets to become ready"
end
if fellBack then
  hs.message = hs.message .. " (on the fallback accelerator)"
end
return hs
