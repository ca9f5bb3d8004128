# Open WebUI stand-in: its health route, a page at /, the admin seeded from WEBUI_ADMIN_EMAIL /
# WEBUI_ADMIN_PASSWORD when no user exists, signup / signin of /api/v1/auths (the first account to sign
# up becomes the admin; later signups are refused), and
# POST /api/chat/completions for a signed-in user, which calls the configured OpenAI-compatible
# backend (vLLM) with OPENAI_API_KEY from its environment, as Open WebUI does; an error from the
# backend comes back with the backend's status. A model's settings (its params, reasoning_tags among
# them) are kept per model id, read and written as Open WebUI's routers/models.py does: GET
# /api/v1/models/model?id=, POST /api/v1/models/create (401 when the id exists), POST
# /api/v1/models/model/update (401 when it does not); a form needs id, name, meta and params (ModelForm).
STANDIN_PORT=8080  # the real image's port (the compose file maps 3000 to it)
USERS=/app/backend/data/users
MODELS=/app/backend/data/models
signed_in() {
  case "$AUTH" in "Bearer standin-"*) return 0 ;; esac
  json "401 Unauthorized" '{"detail":"Not authenticated"}'; return 1
}
model_form() {  # the ModelForm's id when the body is one, else answers 422
  id=$(field id)
  case "$id" in ""|*[!A-Za-z0-9._:/-]*) json "422 Unprocessable Entity" '{"detail":"id: a string without spaces"}'; return 1 ;; esac
  for key in name meta params; do
    grep -q "\"$key\" *:" "$BODY" || { json "422 Unprocessable Entity" "{\"detail\":\"$key: field required\"}"; return 1; }
  done
  mkdir -p "$MODELS"; MODEL_FILE="$MODELS/$(printf %s "$id" | tr / _).json"
}
field() { sed -n "s/.*\"$1\" *: *\"\([^\"]*\)\".*/\1/p" "$BODY" | head -n 1; }
user_json() {
  printf '{"id":"standin-admin","email":"%s","name":"%s","role":"admin","profile_image_url":"/user.png","token":"standin-%s","token_type":"Bearer"}' \
    "$1" "$2" "$(date +%s)"
}
seed_admin() {  # Open WebUI makes the first admin from its environment when no user exists (main.py lifespan)
  if [ ! -s "$USERS" ] && [ -n "${WEBUI_ADMIN_EMAIL:-}" ] && [ -n "${WEBUI_ADMIN_PASSWORD:-}" ]; then
    printf '%s %s\n' "$WEBUI_ADMIN_EMAIL" "$(printf %s "$WEBUI_ADMIN_PASSWORD" | sha256sum | cut -d' ' -f1)" > "$USERS"
  fi
}
route() {
  seed_admin
  case "$METHOD $REQ_PATH" in
    "GET /health") json "200 OK" '{"status":true}' ;;
    "GET /") printf '<!doctype html><title>Open WebUI (stand-in)</title><p>Open WebUI stand-in; backend %s</p>\n' \
               "${OPENAI_API_BASE_URL:-unset}" > "$WORK/out"; respond "200 OK" text/html "$WORK/out" ;;
    "POST /api/v1/auths/signup")
      if [ -s "$USERS" ]; then
        json "403 Forbidden" '{"detail":"You do not have permission to access this resource. Please contact your administrator for assistance."}'
        return
      fi
      email=$(field email) password=$(field password) name=$(field name)
      [ -n "$email" ] && [ -n "$password" ] || { json "400 Bad Request" '{"detail":"email and password are required"}'; return; }
      printf '%s %s\n' "$email" "$(printf %s "$password" | sha256sum | cut -d' ' -f1)" > "$USERS"
      json "200 OK" "$(user_json "$email" "${name:-admin}")" ;;
    "POST /api/v1/auths/signin")
      email=$(field email) password=$(field password)
      if [ -s "$USERS" ] && [ "$(cat "$USERS")" = "$email $(printf %s "$password" | sha256sum | cut -d' ' -f1)" ]; then
        json "200 OK" "$(user_json "$email" admin)"
      else
        json "400 Bad Request" '{"detail":"The email or password provided is incorrect. Please check for typos and try logging in again."}'
      fi ;;
    "GET /api/v1/models/model?id="*)
      signed_in || return
      id=${REQ_PATH#*\?id=}
      case "$id" in ""|*[!A-Za-z0-9._:/-]*) id= ;; esac
      MODEL_FILE="$MODELS/$(printf %s "$id" | tr / _).json"
      if [ -n "$id" ] && [ -f "$MODEL_FILE" ]; then respond "200 OK" application/json "$MODEL_FILE"
      else json "404 Not Found" '{"detail":"We could not find what you are looking for :/"}'; fi ;;
    "POST /api/v1/models/create")
      signed_in && model_form || return
      if [ -f "$MODEL_FILE" ]; then
        json "401 Unauthorized" '{"detail":"Uh-oh! This id is already registered. Please choose another id string."}'; return
      fi
      cp "$BODY" "$MODEL_FILE"; respond "200 OK" application/json "$MODEL_FILE" ;;
    "POST /api/v1/models/model/update")
      signed_in && model_form || return
      [ -f "$MODEL_FILE" ] || { json "401 Unauthorized" '{"detail":"We could not find what you are looking for :/"}'; return; }
      cp "$BODY" "$MODEL_FILE"; respond "200 OK" application/json "$MODEL_FILE" ;;
    "POST /api/chat/completions")
      signed_in || return
      if wget -q -O "$WORK/out" --header "Authorization: Bearer ${OPENAI_API_KEY:-}" \
           --header "Content-Type: application/json" --post-file "$BODY" \
           "${OPENAI_API_BASE_URL:-unset}/chat/completions" 2>"$WORK/err"; then
        respond "200 OK" application/json "$WORK/out"
      else
        status=$(sed -n 's/.*HTTP\/1\.[01] \([0-9][0-9]*\).*/\1/p' "$WORK/err" | head -n 1)
        json "${status:-502} Backend Error" '{"detail":"the OpenAI backend refused the request"}'
      fi ;;
    *) json "404 Not Found" '{"detail":"Not Found"}' ;;
  esac
}
