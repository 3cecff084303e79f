-- wrk script: POST feature requests for random entities, the same for both servers.
-- Environment: BENCH_PATH, BENCH_FORMAT (fp | feast), BENCH_ENTITIES (how many exist),
-- BENCH_BATCH (entities per request), BENCH_FEATURES (a JSON array of feature references).
local path = os.getenv("BENCH_PATH")
local format = os.getenv("BENCH_FORMAT")
local entities = tonumber(os.getenv("BENCH_ENTITIES"))
local batch = tonumber(os.getenv("BENCH_BATCH"))
local features = os.getenv("BENCH_FEATURES")
local headers = {["Content-Type"] = "application/json"}

request = function()
  local ids = {}
  for i = 1, batch do
    ids[i] = '"u' .. math.random(0, entities - 1) .. '"'
  end
  local body
  if format == "fp" then
    body = '{"features":' .. features .. ',"entities":[{"user_id":'
      .. table.concat(ids, '},{"user_id":') .. '}]}'
  else
    -- Full names: Feast refuses equal feature names from different views otherwise.
    body = '{"full_feature_names":true,"features":' .. features .. ',"entities":{"user_id":['
      .. table.concat(ids, ",") .. ']}}'
  end
  return wrk.format("POST", path, headers, body)
end

done = function(summary, latency, requests)
  -- One machine-readable line: requests, duration (µs), p50, p99 (µs), errors.
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), errors))
end
