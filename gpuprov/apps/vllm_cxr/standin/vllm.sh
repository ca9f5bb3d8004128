# vLLM OpenAI-compatible server stand-in: the routes and answer shapes of vllm serve.
SERVED_MODEL_NAME=${ARG_SERVED_MODEL_NAME:-$MODEL}
# The real server downloads the model into its Hugging Face cache (/root/.cache/huggingface/hub/
# models--ORG--NAME) at start, unless it is there already, and answers /health only once it is loaded.
# The stand-in does the same with a 64 MB file written locally (no hub is reachable here), so a test or
# `make bench-ready` sees whether an `up` downloaded again and what the model phase took.
on_start() {
  model_dir=/root/.cache/huggingface/hub/models--$(printf %s "$MODEL" | sed 's|/|--|g')
  weights=$model_dir/snapshots/standin/model.safetensors
  if [ -s "$weights" ]; then
    echo "model $MODEL found in the Hugging Face cache ($model_dir)"
  else
    echo "downloading model $MODEL into the Hugging Face cache ($model_dir)"
    mkdir -p "$model_dir/snapshots/standin"
    dd if=/dev/zero of="$weights.incomplete" bs=1048576 count=64 2>/dev/null
    mv "$weights.incomplete" "$weights"
  fi
}
authorized() {
  [ -z "${VLLM_API_KEY:-}" ] && return 0
  [ "$AUTH" = "Bearer $VLLM_API_KEY" ]
}
route() {
  case "$METHOD $REQ_PATH" in
    "GET /health") : > "$WORK/out"; respond "200 OK" application/json "$WORK/out" ;;
    "GET /metrics")
      done_n=$(cat /tmp/requests_total 2>/dev/null || echo 0)
      cat > "$WORK/out" <<METRICS
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="$SERVED_MODEL_NAME"} 0.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="$SERVED_MODEL_NAME"} 0.0
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="$SERVED_MODEL_NAME"} $done_n.0
METRICS
      respond "200 OK" "text/plain; version=0.0.4; charset=utf-8" "$WORK/out" ;;
    "GET /v1/models")
      authorized || { json "401 Unauthorized" '{"error":"Unauthorized"}'; return; }
      json "200 OK" "{\"object\":\"list\",\"data\":[{\"id\":\"$SERVED_MODEL_NAME\",\"object\":\"model\",\"created\":$(date +%s),\"owned_by\":\"vllm\",\"root\":\"$MODEL\",\"parent\":null,\"max_model_len\":128000,\"permission\":[]}]}" ;;
    "POST /v1/chat/completions")
      authorized || { json "401 Unauthorized" '{"error":"Unauthorized"}'; return; }
      if ! grep -q '"messages"' "$BODY"; then
        json "400 Bad Request" '{"object":"error","message":"messages is required","type":"BadRequestError","param":null,"code":400}'
        return
      fi
      # Images as vLLM takes them (OpenAI image_url parts), within --limit-mm-per-prompt.
      images=$(grep -o '"type" *: *"image_url"' "$BODY" | wc -l)
      limit=$(printf %s "${ARG_LIMIT_MM_PER_PROMPT:-}" | sed -n 's/.*"image" *: *\([0-9]*\).*/\1/p')
      if [ -n "$limit" ] && [ "$images" -gt "$limit" ]; then
        json "400 Bad Request" "{\"object\":\"error\",\"message\":\"At most $limit image(s) may be provided in one prompt.\",\"type\":\"BadRequestError\",\"param\":null,\"code\":400}"
        return
      fi
      if [ "$images" -gt 0 ] && ! grep -q '"url" *: *"\(data:image/[a-z]*;base64,\|https\?://\)' "$BODY"; then
        json "400 Bad Request" '{"object":"error","message":"image_url must be a data: URL or an http(s) URL","type":"BadRequestError","param":null,"code":400}'
        return
      fi
      n=$(cat /tmp/requests_total 2>/dev/null || echo 0); echo $((n + 1)) > /tmp/requests_total
      json "200 OK" "{\"id\":\"chatcmpl-standin$(date +%s)\",\"object\":\"chat.completion\",\"created\":$(date +%s),\"model\":\"$SERVED_MODEL_NAME\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"<think>This is the vLLM stand-in on the local sandbox host; no model runs here.</think>No finding (stand-in answer).\",\"tool_calls\":[]},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":$(wc -c < "$BODY"),\"total_tokens\":$(( $(wc -c < "$BODY") + 24 )),\"completion_tokens\":24}}" ;;
    *) json "404 Not Found" '{"detail":"Not Found"}' ;;
  esac
}
