# OHIF-AI MONAI Label server stand-in: /info/ and /infer/segmentation with the real shapes.

# The real server downloads nnInteractive's weights at import (basic_infer.py: snapshot_download(...,
# local_dir="/code/checkpoints")) unless they are there already; the stand-in does the same with a
# small file, so a test sees whether a recreated container downloaded again.
on_start() {
  weights=/code/checkpoints/nnInteractive_v1.0
  if [ -s "$weights/fold_0/checkpoint_final.pth" ]; then
    echo "nnInteractive weights found in $weights"
  else
    echo "downloading nnInteractive weights into $weights"
    mkdir -p "$weights/fold_0" /code/checkpoints/.cache/huggingface
    date +%s%N > "$weights/fold_0/checkpoint_final.pth"
  fi
}
route() {
  # One access-log line per request on the container's output (nc's, PID 1), in the shape of the real
  # server's uvicorn log: `docker logs monai_sam2` shows what reached it, e.g. through the viewer's tunnel.
  printf 'INFO:     stand-in - "%s %s HTTP/1.1"\n' "$METHOD" "$REQ_PATH" > /proc/1/fd/1 2>/dev/null || true
  # OHIF-AI's server is FastAPI(root_path="/monai") (monailabel/app.py): /monai/info/ and /info/ both
  # reach the same route, and the viewer's nginx passes /monai/... through unchanged.
  case "$REQ_PATH" in /monai/*) REQ_PATH=${REQ_PATH#/monai} ;; esac
  case "$METHOD $REQ_PATH" in
    "GET /info/"|"GET /info")
      json "200 OK" '{"name":"MONAILabel - Radiology (stand-in)","description":"stand-in for the OHIF-AI MONAI Label server","version":"0.8.5","labels":["segmentation"],"models":{"segmentation":{"type":"segmentation","labels":{"segmentation":1},"dimension":3,"description":"SAM2 / MedSAM2 / SAM3 / nnInteractive"},"Histogram+GraphCut":{"type":"scribbles","labels":{},"dimension":3,"description":"scribbles"},"GMM+GraphCut":{"type":"scribbles","labels":{},"dimension":3,"description":"scribbles"}},"trainers":{},"strategies":{},"scoring":{},"train_stats":{},"datastore":{"total":0,"completed":0}}' ;;
    "GET /") printf '<!doctype html><title>MONAILabel - Swagger UI</title>\n' > "$WORK/out"; respond "200 OK" text/html "$WORK/out" ;;
    POST\ /infer/segmentation*) infer ;;
    GET\ /datastore/*|GET\ /datastore) datastore ;;
    *) json "404 Not Found" '{"detail":"Not Found"}' ;;
  esac
}
infer() {
  if ! grep -aq 'name="file"' "$BODY"; then
    json "422 Unprocessable Entity" '{"detail":[{"loc":["body","file"],"msg":"field required","type":"value_error.missing"}]}'
    return
  fi
  # The real server reads a DICOM zip, a DICOM file or a NIfTI volume; anything else fails there.
  zip=$(printf 'PK\003\004') gz=$(printf '\037\213')
  if ! sed -n '/name="file"/,$p' "$BODY" | grep -aq -e "$zip" -e 'DICM' -e "$gz"; then
    json "500 Internal Server Error" '{"detail":"the file is not a DICOM zip, DICOM file or NIfTI volume"}'
    return
  fi
  params=$(sed -n '/name="params"/,/^--/p' "$BODY" | tr -d '\r' | grep -a '^{' | head -n 1)
  case "$params" in
    *'"nninter"'*'"init"'*|*'"nninter"'*'"reset"'*) json "200 OK" '{}'; return ;;
  esac
  prompt=$(printf %s "$params" | sed -n 's/.*"pos_points" *: *\(\[\[[^]]*\]\]\).*/\1/p')
  b=standinboundary$(date +%s)
  {
    printf -- '--%s\r\nContent-Disposition: form-data; name="params"\r\nContent-Type: application/json\r\n\r\n' "$b"
    printf '{"prompt_info":{"pos_points":%s},"nninter_elapsed":0.01,"flipped":false,"label_name":"segmentation"}\r\n' "${prompt:-[]}"
    printf -- '--%s\r\nContent-Disposition: form-data; name="image"; filename="mask.nii.gz"\r\nContent-Type: application/gzip\r\n\r\n' "$b"
    cat /standin/mask.nii.gz
    printf '\r\n--%s--\r\n' "$b"
  } > "$WORK/out"
  respond "200 OK" "multipart/form-data; boundary=$b" "$WORK/out"
}
# GET /datastore/?output=all|stats (monailabel/endpoints/datastore.py): the images in --studies, each by its
# id (the file name without its extension), as the real local datastore lists them; labels are not kept.
datastore() {
  objects="" n=0
  for f in /code/studies/*; do
    [ -f "$f" ] || continue
    name=${f##*/} id=${name%%.*} ext=.${name#*.}
    [ "$ext" = ".$name" ] && ext=""
    objects="$objects${objects:+,}\"$id\":{\"image\":{\"ext\":\"$ext\",\"info\":{}},\"labels\":{}}"
    n=$((n + 1))
  done
  case "$REQ_PATH" in
    *output=all*) json "200 OK" "{\"name\":\"radiology (stand-in)\",\"description\":\"local datastore\",\"images_dir\":\"/code/studies\",\"labels_dir\":\"/code/studies/labels\",\"objects\":{$objects}}" ;;
    *) json "200 OK" "{\"total\":$n,\"completed\":0,\"label_tags\":{},\"train\":{}}" ;;
  esac
}
