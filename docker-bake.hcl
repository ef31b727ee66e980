# Builds the three images with one command:
#   GIT_SHA=$(git rev-parse HEAD) VERSION=0.1.0 docker buildx bake
# Set REGISTRY (e.g. ghcr.io/acme/) to tag for a registry, and --push to push.
variable "REGISTRY" { default = "" }
variable "VERSION" { default = "0.1.0" }
variable "GIT_SHA" { default = "unknown" }
variable "CREATED" { default = timestamp() }

group "default" {
  targets = ["signal", "credentials", "loadtest"]
}

target "_common" {
  context    = "."
  dockerfile = "deploy/docker/Dockerfile"
  args = {
    VERSION = VERSION
    GIT_SHA = GIT_SHA
    CREATED = CREATED
  }
}

target "signal" {
  inherits = ["_common"]
  target   = "signal"
  tags     = ["${REGISTRY}webrtc-signal/signal:${VERSION}"]
}

target "credentials" {
  inherits = ["_common"]
  target   = "credentials"
  tags     = ["${REGISTRY}webrtc-signal/credentials:${VERSION}"]
}

target "loadtest" {
  inherits = ["_common"]
  target   = "loadtest"
  tags     = ["${REGISTRY}webrtc-signal/loadtest:${VERSION}"]
}
