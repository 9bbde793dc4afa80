package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// bareRuns times n runs of `docker run --rm --network host image true` through the
// engine's API (create, start, wait for the exit, remove), one after the other, and
// returns their durations in milliseconds. host "" uses DOCKER_HOST or the default.
func bareRuns(ctx context.Context, host, image string, n int) ([]float64, error) {
	opts := []client.Opt{client.FromEnv}
	if host != "" {
		opts = append(opts, client.WithHost(host))
	}
	cli, err := client.New(opts...)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	out := make([]float64, 0, n)
	for range n {
		start := time.Now()
		c, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
			Config:     &container.Config{Image: image, Cmd: []string{"true"}},
			HostConfig: &container.HostConfig{NetworkMode: "host"},
		})
		if err != nil {
			return nil, fmt.Errorf("create: %w", err)
		}
		wait := cli.ContainerWait(ctx, c.ID, client.ContainerWaitOptions{Condition: container.WaitConditionNextExit})
		if _, err := cli.ContainerStart(ctx, c.ID, client.ContainerStartOptions{}); err != nil {
			_, _ = cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true})
			return nil, fmt.Errorf("start: %w", err)
		}
		select {
		case r := <-wait.Result:
			if r.StatusCode != 0 {
				return nil, fmt.Errorf("%s true exited %d", image, r.StatusCode)
			}
		case err := <-wait.Error:
			return nil, fmt.Errorf("wait: %w", err)
		}
		if _, err := cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{}); err != nil {
			return nil, fmt.Errorf("remove: %w", err)
		}
		out = append(out, jobsMs(time.Since(start)))
	}
	return out, nil
}
