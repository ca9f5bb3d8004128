#!/bin/sh
# Stand-in HTTP/1.1 handler: one connection on stdin/stdout (spawned by `nc -ll -e`).
# Parses the request line, the headers and the body, then calls route() from the service's script.
set -u
read -r METHOD REQ_PATH _proto || exit 0
METHOD=$(printf %s "$METHOD" | tr -d '\r')
REQ_PATH=$(printf %s "$REQ_PATH" | tr -d '\r')
LEN=0 AUTH="" CTYPE=""
while read -r line; do
  line=$(printf %s "$line" | tr -d '\r')
  [ -z "$line" ] && break
  name=$(printf %s "${line%%:*}" | tr 'A-Z' 'a-z')
  value=${line#*: }
  case "$name" in
    content-length) LEN=$value ;;
    authorization) AUTH=$value ;;
    content-type) CTYPE=$value ;;
  esac
done
WORK=$(mktemp -d /tmp/req.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
BODY=$WORK/body
if [ "$LEN" -gt 0 ] 2>/dev/null; then head -c "$LEN" > "$BODY"; else : > "$BODY"; fi

# respond STATUS CONTENT-TYPE FILE
respond() {
  printf 'HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %s\r\nConnection: close\r\n\r\n' \
    "$1" "$2" "$(wc -c < "$3" | tr -d ' ')"
  cat "$3"
}
# json STATUS TEXT
json() { printf '%s' "$2" > "$WORK/out"; respond "$1" application/json "$WORK/out"; }

. "$ROUTES"
route
