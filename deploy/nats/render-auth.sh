#!/usr/bin/env bash
# Renders the NATS users of the provisioning services (auth.conf.template) into OUT_DIR:
#
#   OUT_DIR/scim-auth.conf            for the NATS server (bcrypt hashes only; include it)
#   OUT_DIR/<service>.password        each service's password, mode 600 (for its Secret)
#
#   deploy/nats/render-auth.sh OUT_DIR
#
# Settings (environment): NATS_STREAM (PROVISIONING), NATS_SUBJECT_PREFIX (provisioning) and
# NOTIFICATION_CONSUMER (notification), as the services are configured; the passwords
# USER_DIRECTORY_NATS_PASSWORD, NOTIFICATION_NATS_PASSWORD, SCIM_GATEWAY_NATS_PASSWORD (each
# generated, 32 random characters, when unset). BCRYPT_COST (11).
#
# Rotating one service's password: PREVIOUS=the scim-auth.conf in use, ROTATE=the service
# (user-directory, notification or scim-gateway): that one gets a new password, the others keep
# their hashes from PREVIOUS (and get no .password file).
#
# Needs bash, perl (its crypt() is the C library's, which does bcrypt: glibc's libxcrypt) and
# /dev/urandom; nothing is downloaded, no password is printed.
set -euo pipefail

out="${1:?usage: $0 OUT_DIR}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
stream="${NATS_STREAM:-PROVISIONING}"
prefix="${NATS_SUBJECT_PREFIX:-provisioning}"
consumer="${NOTIFICATION_CONSUMER:-notification}"
cost="${BCRYPT_COST:-11}"

# Names end up in subjects: one token each, no wildcards.
for name in "$stream" "$prefix" "$consumer"; do
  if ! [[ "$name" =~ ^[A-Za-z0-9_-]+$ ]]; then
    echo "render-auth: '$name' is not a valid subject token (letters, digits, _ and -)" >&2
    exit 2
  fi
done

# $1 random characters of the set $2 (read in bounded chunks: no SIGPIPE under pipefail).
random() {
  local s=""
  while [ "${#s}" -lt "$1" ]; do s+="$(head -c 256 /dev/urandom | LC_ALL=C tr -dc "$2")"; done
  printf '%s' "${s:0:$1}"
}

# bcrypt of $1 (read from the environment, never from the command line).
bcrypt() {
  local salt
  # 22 characters of bcrypt's base64; the last one carries 2 bits, so it is one of .Oeu.
  salt="$(random 21 './A-Za-z0-9')$(random 1 '.Oeu')"
  PW="$1" SETTING="\$2b\$$(printf '%02d' "$cost")\$$salt" perl -e '
    my $h = crypt($ENV{PW}, $ENV{SETTING});
    die "render-auth: this C library has no bcrypt in crypt()\n" unless defined $h && $h =~ /^\$2b\$/;
    print $h;'
}

mkdir -p "$out"
umask 077
conf="$(cat "$here/auth.conf.template")"
# The hash of user $1 in the configuration $2.
previous_hash() {
  awk -v user="\"$1\"" '$1 == "user:" && $2 == user { found = 1; next }
    found && $1 == "password:" { gsub(/"/, "", $2); print $2; exit }' "$2"
}
case "${ROTATE:-}" in
  ""|user-directory|notification|scim-gateway) ;;
  *) echo "render-auth: ROTATE is one of user-directory, notification, scim-gateway" >&2; exit 2 ;;
esac
if [ -n "${ROTATE:-}" ] && [ ! -s "${PREVIOUS:-}" ]; then
  echo "render-auth: ROTATE needs PREVIOUS, the scim-auth.conf in use" >&2
  exit 2
fi
for service in user-directory notification scim-gateway; do
  var="$(echo "$service" | tr 'a-z-' 'A-Z_')"
  given="${var}_NATS_PASSWORD"
  password="${!given:-}"
  hash=""
  if [ -z "$password" ] && [ -n "${PREVIOUS:-}" ] && [ "$service" != "${ROTATE:-}" ]; then
    hash="$(previous_hash "$service" "$PREVIOUS")"
    [ -n "$hash" ] || { echo "render-auth: no password of $service in $PREVIOUS" >&2; exit 1; }
  else
    [ -n "$password" ] || password="$(random 32 'A-Za-z0-9')"
    printf '%s' "$password" >"$out/$service.password"
    hash="$(bcrypt "$password")"
  fi
  conf="${conf//@${var}_PASSWORD_HASH@/$hash}"
done
conf="${conf//@STREAM@/$stream}"
conf="${conf//@PREFIX@/$prefix}"
conf="${conf//@CONSUMER@/$consumer}"
if grep -qE '@[A-Z_]+@' <<<"$conf"; then
  echo "render-auth: a placeholder was left unsubstituted" >&2
  exit 1
fi
printf '%s\n' "$conf" >"$out/scim-auth.conf"
