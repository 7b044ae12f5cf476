#!/usr/bin/env bash
# A stand-in for Docker Hub's `python:X.Y-slim`, which tests cannot pull (no registry but
# the package indexes is reachable here), made from this machine's own CPython and laid out
# the same way: the interpreter in /usr/local/bin, its standard library in
# /usr/local/lib/pythonX.Y with an empty site-packages, libpython in /usr/local/lib, the
# shared libraries they and the extra executables given load, CA certificates, and a
# passwd without uid 65532 (as in the real one). Writes the root filesystem as a tar.
#
# usage: python-base.sh OUT.tar [EXECUTABLE...]    prints "X.Y X.Y.Z"
set -euo pipefail
out=$1
shift
py=${PYTHON:-python3}

read -r exe stdlib ver full < <("$py" -c '
import os, sys, sysconfig
print(os.path.realpath(sys.executable), sysconfig.get_paths()["stdlib"],
      "%d.%d" % sys.version_info[:2], sys.version.split()[0])')

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/local/bin" "$root/usr/local/lib/python$ver/site-packages" \
  "$root/tmp" "$root/etc/ld.so.conf.d" "$root/etc/ssl/certs"
chmod 1777 "$root/tmp"

cp "$exe" "$root/usr/local/bin/python$ver"
ln -s "python$ver" "$root/usr/local/bin/python3"
ln -s python3 "$root/usr/local/bin/python"
# Debian-built interpreters read dist-packages where python.org builds read site-packages.
ln -s site-packages "$root/usr/local/lib/python$ver/dist-packages"
(cd "$stdlib" && tar --exclude=./test --exclude=./site-packages --exclude=./dist-packages \
  --exclude=./idlelib --exclude=./tkinter --exclude=./ensurepip --exclude=./lib2to3 \
  --exclude='./config-*' --exclude='*/__pycache__' --exclude='./lib-dynload/_tkinter*' \
  -cf - .) | tar -C "$root/usr/local/lib/python$ver" -xf -

# Every shared library the interpreter, its extension modules and the executables load, at
# the path the loader finds it; libpython goes to /usr/local/lib as in the real image.
libs() {
  ldd "$@" 2>/dev/null | awk '/=> \//{print $3} /^[[:space:]]*\/[^ ]*ld-linux/{print $1}' | sort -u
}
for lib in $(libs "$exe" "$root/usr/local/lib/python$ver"/lib-dynload/*.so "$@"); do
  case "$(basename "$lib")" in
    libpython*) cp -L "$lib" "$root/usr/local/lib/" ;;
    *) cp -L --parents "$lib" "$root" ;;
  esac
done
echo /usr/local/lib >"$root/etc/ld.so.conf.d/usr-local.conf"
echo 'include /etc/ld.so.conf.d/*.conf' >"$root/etc/ld.so.conf"
ldconfig -r "$root"

cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"

tar -C "$root" --numeric-owner -cf "$out" .
echo "$ver $full"
