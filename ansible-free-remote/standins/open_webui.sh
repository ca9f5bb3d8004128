# Open WebUI stand-in: its health route and a page at /.
route() {
  case "$METHOD $REQ_PATH" in
    "GET /health") json "200 OK" '{"status":true}' ;;
    "GET /") printf '<!doctype html><title>Open WebUI (stand-in)</title><p>Open WebUI stand-in; backend %s</p>\n' \
               "${OPENAI_API_BASE_URL:-unset}" > "$WORK/out"; respond "200 OK" text/html "$WORK/out" ;;
    *) json "404 Not Found" '{"detail":"Not Found"}' ;;
  esac
}
