package postgres

// DisableCommitNotify turns off the after-commit NOTIFY (benchmarks compare it with a
// per-row trigger).
func DisableCommitNotify() Option { return func(c *Config) { c.disableCommitNotify = true } }
