#!/usr/bin/env bash
# `make viewer-dist`: the OHIF-AI viewer's static build from its npm sources, the steps of its own
# recipe (Viewers/platform/app/.recipes/Nginx-Orthanc/dockerfile at the pinned commit) run here
# instead of in node:20 (no image registry is reachable): yarn install, the recipe's replaced
# node_modules files (its `COPY ./backup/...` lines, read from the dockerfile itself), then
# `APP_CONFIG=config/docker-nginx-orthanc.js yarn run build:dev`. The browser test serves the
# result when it exists (tests/viewer/test_viewer_browser.py); CI's 90 minutes on 2 cores do not fit it.
#
#   OHIF_AI_SRC  git URL or directory of the OHIF-AI repository (default: its GitHub URL)
#   OHIF_AI_REF  commit (default: the pinned one)
#   OHIF_AI_TREE a checked-out tree of that commit to build instead (no clone)
#   OHIF_AI_RELOCK=1  drop yarn.lock and resolve the ranges afresh: for a registry mirror that lacks
#                     some exact versions the lockfile pins (the build is then not the pinned one)
#   VIEWER_DIST  where the built site goes (default: .cache/ohif-ai-viewer-dist)
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC=${OHIF_AI_SRC:-https://github.com/anandpreshob/OHIF-AI}
REF=${OHIF_AI_REF:-179fe0ddc4e632d872c3d18bf05845cad302b0ee}
OUT=${VIEWER_DIST:-.cache/ohif-ai-viewer-dist}
WORK=${VIEWER_BUILD_DIR:-.cache/ohif-ai-build}
RECIPE=platform/app/.recipes/Nginx-Orthanc/dockerfile
OLDPWD_ROOT=$PWD
started=$(date +%s)

command -v node >/dev/null || { echo "error: node is not installed (Node.js 20, as the recipe's node:20 image)"; exit 1; }
mkdir -p "$WORK"
TREE=${OHIF_AI_TREE:-$WORK/src}
if [ -z "${OHIF_AI_TREE:-}" ]; then
  if [ ! -d "$TREE/.git" ]; then git clone -q --no-checkout "$SRC" "$TREE"; fi
  git -C "$TREE" cat-file -e "$REF^{commit}" 2>/dev/null || git -C "$TREE" fetch -q origin
  git -C "$TREE" checkout -q --force "$REF"
fi
cd "$TREE/Viewers"

echo "== yarn install ($(node --version), yarn 1.22.22 as the lockfile's packageManager)"
export CYPRESS_INSTALL_BINARY=0 PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1  # optional test tools: no downloads
# husky (a dev dependency) installs git hooks into the first repository above the tree: ours. Never.
export HUSKY_SKIP_INSTALL=1 HUSKY=0 GIT_CEILING_DIRECTORIES="$(dirname "$PWD")"
relock=()
if [ "${OHIF_AI_RELOCK:-0}" = 1 ]; then echo "   (yarn.lock dropped: OHIF_AI_RELOCK=1)"; rm -f yarn.lock; relock=(--ignore-engines); fi
npx --yes yarn@1.22.22 config set workspaces-experimental true >/dev/null
npx --yes yarn@1.22.22 install --network-timeout 600000 --non-interactive "${relock[@]}"
t_install=$(( $(date +%s) - started ))

echo "== the recipe's replaced node_modules files"
# Each `COPY ./backup/<file> <dest>` of the recipe, in its order (the recipe first removes each dest).
grep -E '^COPY \./backup/' "$RECIPE" | while read -r _copy from dest; do
  from=${from#./}; dest=${dest#/usr/src/app/}
  case "$dest" in */) dest="$dest$(basename "$from")" ;; esac
  rm -f "$dest"; mkdir -p "$(dirname "$dest")"; cp "$from" "$dest"; echo "  $dest"
done

echo "== yarn run build:dev (APP_CONFIG=config/docker-nginx-orthanc.js)"
APP_CONFIG=config/docker-nginx-orthanc.js npx --yes yarn@1.22.22 run build:dev
cd "$OLDPWD_ROOT"
rm -rf "$OUT" && mkdir -p "$(dirname "$OUT")" && cp -a "$TREE/Viewers/platform/app/dist" "$OUT"
echo "$REF" > "$OUT/.ohif-ai-commit"
total=$(( $(date +%s) - started ))
echo "viewer-dist: $OUT ($(du -sh "$OUT" | cut -f1)), yarn install ${t_install}s, total ${total}s on $(nproc) cores"
