module github.com/tektoncd/artifacts-csi-driver

go 1.26.0

require (
	github.com/google/go-containerregistry v0.22.1
	github.com/klauspost/compress v1.20.4
	github.com/klauspost/pgzip v1.3.0
	golang.org/x/sys v0.50.0
)
