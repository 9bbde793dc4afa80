//go:build tools

package kubebuild
