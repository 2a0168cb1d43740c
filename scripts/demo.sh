#!/usr/bin/env bash
# make demo: a walk through the running product (start it first with `make run`).
# grpcurl (server reflection, no proto files), curl (the HTTP/JSON gateway) and
# the taskgate CLI, each command printed before its output. It makes a throwaway
# user and keeps the CLI's session in a temporary file, not in yours.
#   TASKGATE_SERVER        gRPC address (default 127.0.0.1:50051)
#   TASKGATE_GATEWAY_ADDR  HTTP address (default 127.0.0.1:8080)
set -euo pipefail
grpc=${TASKGATE_SERVER:-127.0.0.1:50051}
http=${TASKGATE_GATEWAY_ADDR:-127.0.0.1:8080}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export TASKGATE_CLI_CONFIG="$work/cli.json" TASKGATE_SERVER="$grpc"
user="demo$RANDOM$RANDOM"
password="correct horse battery staple"

show() {  # print the command (the session token as $token), then run it
  local line="" arg
  for arg in "$@"; do
    if [[ "$arg" =~ [[:space:]\"{}*] ]]; then line+=" '$arg'"; else line+=" $arg"; fi
  done
  [ -n "${token:-}" ] && line=${line//$token/\$token}
  printf '\n$%s\n' "$line"
  "$@"
}
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval('d' + sys.argv[1]))" "$1"; }

if ! curl -fsS "http://$http/ready" >/dev/null 2>&1; then
  echo "taskgate is not running at $grpc / $http: start it with 'make run' in another terminal" >&2
  exit 1
fi
python3 -c "
from PIL import Image, ImageDraw
im = Image.linear_gradient('L').resize((320, 200)).convert('RGB')
ImageDraw.Draw(im).ellipse((100, 40, 220, 160), fill=(220, 60, 40))
im.save('$work/photo.png')"

echo "== gRPC with grpcurl (reflection) =="
show grpcurl -plaintext "$grpc" list
show grpcurl -plaintext -d "{\"username\": \"$user\", \"password\": \"$password\"}" \
  "$grpc" taskgate.v1.UserService/CreateUser
token=$(grpcurl -plaintext -d "{\"username\": \"$user\", \"password\": \"$password\"}" \
  "$grpc" taskgate.v1.SessionService/CreateSession | field '["session"]["session_id"]')
echo "(session token from SessionService/CreateSession: ${token:0:8}…)"
printf '\n$ grpcurl -plaintext -H "authorization: Bearer $token" %s taskgate.v1.TaskService/ListFilters | head -12\n' "$grpc"
grpcurl -plaintext -H "authorization: Bearer $token" "$grpc" taskgate.v1.TaskService/ListFilters | head -12

echo
echo "== HTTP/JSON with curl (the gateway) =="
body="{\"image\": \"$(base64 -w0 "$work/photo.png")\", \"filters\": [{\"grayscale\": {}}, {\"thumbnail\": {\"maxSide\": 64}}]}"
printf '\n$ curl -sS -X POST http://%s/v1/tasks -H "authorization: Bearer $token" -d '"'"'{"image": "<base64 png>", "filters": [{"grayscale": {}}, {"thumbnail": {"maxSide": 64}}]}'"'"'\n' "$http"
created=$(curl -sS -X POST "http://$http/v1/tasks" -H "authorization: Bearer $token" \
  -H 'content-type: application/json' -d "$body")
echo "$created" | python3 -m json.tool | sed -n 1,12p
task=$(echo "$created" | field '["task"]["taskId"]')
for _ in $(seq 50); do
  status=$(curl -sS "http://$http/v1/tasks/$task" -H "authorization: Bearer $token" | field '["task"]["status"]')
  [ "$status" = TASK_STATUS_COMPLETED ] && break
  sleep 0.2
done
show curl -sS "http://$http/v1/tasks/$task" -H "authorization: Bearer $token" -o /dev/null -w '%{http_code}\n'
show curl -sS "http://$http/v1/tasks/$task/result" -H "authorization: Bearer $token" -o "$work/thumb.png" \
  -w '%{http_code} %{content_type} %{size_download} bytes\n'

echo
echo "== the taskgate CLI =="
echo "$password" | show taskgate login "$user" --password-stdin
show taskgate submit "$work/photo.png" --filter blur:radius=2 --filter resize:width=160,height=100 \
  --wait -o "$work/small.png"
show taskgate list
show taskgate --json status "$task"
show taskgate submit "$work/photo.png" --filter blur:radius=lots || echo "(exit status $?)"
show taskgate logout
