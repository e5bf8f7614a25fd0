#!/usr/bin/env bash
# Refresh the vendored JS/CSS from the npm registry (build time only; the app never loads a CDN).
# Usage: bash src/sandwatch/serve/web/vendor.sh   (needs node + npm)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="$here/../static/vendor"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$here/package.json" "$here/package-lock.json" "$tmp/"
(cd "$tmp" && npm ci --no-audit --no-fund --ignore-scripts >/dev/null)
nm="$tmp/node_modules"
mkdir -p "$out/leaflet/images" "$out/leaflet-geoman"
cp "$nm/leaflet/dist/leaflet.js" "$nm/leaflet/dist/leaflet.css" "$nm/leaflet/LICENSE" "$out/leaflet/"
cp "$nm"/leaflet/dist/images/* "$out/leaflet/images/"
cp "$nm/@geoman-io/leaflet-geoman-free/dist/leaflet-geoman.min.js" "$nm/@geoman-io/leaflet-geoman-free/dist/leaflet-geoman.css" \
   "$nm/@geoman-io/leaflet-geoman-free/LICENSE" "$out/leaflet-geoman/"
# no source maps are shipped: drop the references so browsers do not ask for them
sed -i 's#//\# sourceMappingURL=.*##' "$out/leaflet/leaflet.js" "$out/leaflet-geoman/leaflet-geoman.min.js"
sed -i 's#/\*\# sourceMappingURL=.*\*/##' "$out/leaflet-geoman/leaflet-geoman.css"
echo "vendored into $out"
