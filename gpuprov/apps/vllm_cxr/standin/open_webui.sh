# Open WebUI stand-in: its health route, a page at /, the first-admin signup / signin of
# /api/v1/auths (the first account to sign up becomes the admin; later signups are refused), and
# POST /api/chat/completions for a signed-in user, which calls the configured OpenAI-compatible
# backend (vLLM) with OPENAI_API_KEY from its environment, as Open WebUI does; an error from the
# backend comes back with the backend's status.
STANDIN_PORT=8080  # the real image's port (the compose file maps 3000 to it)
USERS=/app/backend/data/users
field() { sed -n "s/.*\"$1\" *: *\"\([^\"]*\)\".*/\1/p" "$BODY" | head -n 1; }
user_json() {
  printf '{"id":"standin-admin","email":"%s","name":"%s","role":"admin","profile_image_url":"/user.png","token":"standin-%s","token_type":"Bearer"}' \
    "$1" "$2" "$(date +%s)"
}
route() {
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
    "POST /api/chat/completions")
      case "$AUTH" in "Bearer standin-"*) ;; *) json "401 Unauthorized" '{"detail":"Not authenticated"}'; return ;; esac
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
