package domain

import "fmt"

// Limits of job secrets.
const (
	MaxSecretRefs       = 32       // entries of JobSpec.Secrets
	MaxSecretNameLen    = 128      // bytes of a secret's name
	MaxSecretValueBytes = 32 << 10 // bytes of a secret's value
)

// SecretRef names a secret of the job's namespace and the environment variable that
// holds its value in the job's process. The value itself is never part of a job: the
// replica holding the worker's stream decrypts it when it sends RunJob (package
// secrets has the whole design).
type SecretRef struct {
	Name string `json:"name"`
	// Env is the variable's name; empty: Name.
	Env string `json:"env,omitempty"`
}

// EnvName is the environment variable that receives the secret.
func (r SecretRef) EnvName() string {
	if r.Env != "" {
		return r.Env
	}
	return r.Name
}

// ValidateSecretName checks a secret's name: like an environment variable's,
// [A-Za-z_][A-Za-z0-9_]*, at most MaxSecretNameLen bytes.
func ValidateSecretName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("is empty")
	case len(name) > MaxSecretNameLen:
		return fmt.Errorf("is %d bytes, the limit is %d (MaxSecretNameLen)", len(name), MaxSecretNameLen)
	case !validEnvKey(name):
		return fmt.Errorf("%q must match [A-Za-z_][A-Za-z0-9_]*", name)
	}
	return nil
}

// secrets checks the references: valid names, valid and distinct variables, none
// also set in env (a secret never shares a variable with a plain value).
func (v *validator) secrets(refs []SecretRef, env map[string]string) {
	if len(refs) > MaxSecretRefs {
		v.add("secrets", "%d secrets exceeds the limit of %d (MaxSecretRefs)", len(refs), MaxSecretRefs)
		return
	}
	vars := make(map[string]string, len(refs))
	for i, r := range refs {
		field := fmt.Sprintf("secrets[%d]", i)
		if err := ValidateSecretName(r.Name); err != nil {
			v.add(field+".name", "%s", err.Error())
			continue
		}
		name := r.EnvName()
		if !validEnvKey(name) || len(name) > MaxSecretNameLen {
			v.add(field+".env", "%q must match [A-Za-z_][A-Za-z0-9_]* (at most %d bytes)", name, MaxSecretNameLen)
			continue
		}
		if prev, dup := vars[name]; dup {
			v.add(field+".env", "variable %s already receives secret %s", name, prev)
			continue
		}
		if _, clash := env[name]; clash {
			v.add(field+".env", "variable %s is also set in env", name)
			continue
		}
		if name == "HODEI_JOB_ID" {
			v.add(field+".env", "variable HODEI_JOB_ID is reserved")
			continue
		}
		vars[name] = r.Name
	}
}
