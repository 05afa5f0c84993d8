#!/usr/bin/env bash
# Container entrypoint: run the command as the host user who owns the mounted logs/ folder.
#
# The container starts as root only for this. It reads the owner uid/gid of logs/ (falling back
# to the project folder), gives the image's `learner` account that uid/gid, and drops root
# privileges with setpriv, keeping the environment (PATH with the venv). Files the course writes
# to logs/ and data/ then belong to the host user, whatever their uid. A root-owned checkout
# (uid 0, as on some CI machines) is run as root: the files still belong to the folder's owner.
set -euo pipefail

PROJECT=/course
OWNED=${FER_OWNER_PATH:-$PROJECT/logs}
[ -e "$OWNED" ] || OWNED=$PROJECT

if [ "$(id -u)" != "0" ]; then
  # Started with --user: nothing to re-map, run as given.
  exec "$@"
fi

uid=$(stat -c %u "$OWNED")
gid=$(stat -c %g "$OWNED")
export HOME=/home/learner USER=learner LOGNAME=learner

if [ "$uid" = "0" ]; then
  # Root-owned mounts: running as their owner keeps "files belong to the folder's owner" true.
  exec "$@"
fi

old_uid=$(id -u learner)
old_gid=$(id -g learner)
if [ "$gid" != "$old_gid" ]; then
  groupmod -o -g "$gid" learner
fi
if [ "$uid" != "$old_uid" ]; then
  usermod -o -u "$uid" learner
fi
if [ "$uid" != "$old_uid" ] || [ "$gid" != "$old_gid" ]; then
  # The image's own files (not the mounts: -xdev stays off bind mounts) follow the new ids.
  find "$PROJECT" "$HOME" -xdev \( -uid "$old_uid" -o -gid "$old_gid" \) \
       -exec chown -h "$uid:$gid" {} + 2>/dev/null || true
fi

exec setpriv --reuid="$uid" --regid="$gid" --init-groups -- "$@"
