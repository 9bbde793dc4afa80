package jobs

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/hodei-jobs/hodei/domain"
	"github.com/hodei-jobs/hodei/provider"
)

// Provider selection: the job's Provider if it names one; otherwise every registered
// provider, in the order they were registered (hodei server --provider order), that
// carries the job's Selector labels and can run the job (an image needs a provider
// with Capabilities().Images). Among the candidates with a free slot the scheduler
// takes one by Config.ProviderStrategy; a job whose candidates are all full waits in
// PENDING while later jobs whose providers have room start.

// Strategy is how the scheduler chooses among a job's candidate providers that have
// room (hodei server --provider-strategy).
type Strategy string

const (
	// StrategyFirstFit takes the first candidate, in registration order, with a free
	// slot: later providers take the overflow of earlier ones.
	StrategyFirstFit Strategy = "first-fit"
	// StrategyLeastLoaded takes the candidate whose share of its capacity in use
	// (workers not TERMINATED / its MaxWorkers) is lowest, the earlier one on a tie:
	// jobs spread over the providers in proportion to their capacities.
	StrategyLeastLoaded Strategy = "least-loaded"
)

// slots is a provider's capacity and what of it is free.
type slots struct{ room, limit int }

// choose returns the candidate the strategy picks among those with room ("" if all
// are full).
func choose(strategy Strategy, cands []string, free map[string]slots) string {
	chosen, best := "", 2.0
	for _, c := range cands {
		sl := free[c]
		if sl.room <= 0 {
			continue
		}
		if strategy != StrategyLeastLoaded {
			return c
		}
		if load := float64(sl.limit-sl.room) / float64(sl.limit); load < best {
			chosen, best = c, load
		}
	}
	return chosen
}

// candidates returns the providers that may run spec, in preference order, or a
// *domain.ValidationError saying why none can.
func (s *Service) candidates(spec domain.JobSpec) ([]string, error) {
	names := s.providers.Ordered()
	configured := strings.Join(names, ", ")
	if spec.Provider != "" {
		p, err := s.providers.Get(spec.Provider)
		if err != nil {
			return nil, &domain.ValidationError{Field: "provider", Msg: fmt.Sprintf("%q is not configured (configured: %s)", spec.Provider, configured)}
		}
		if why := unfit(spec, p.Capabilities()); why != "" {
			return nil, &domain.ValidationError{Field: "provider", Msg: fmt.Sprintf("%s cannot run the job: %s", spec.Provider, why)}
		}
		return []string{spec.Provider}, nil
	}
	var out []string
	labelled := false
	for _, n := range names {
		p, err := s.providers.Get(n)
		if err != nil {
			continue
		}
		c := p.Capabilities()
		if !matches(spec.Selector, c.Labels) {
			continue
		}
		labelled = true
		if unfit(spec, c) == "" {
			out = append(out, n)
		}
	}
	switch {
	case len(out) > 0:
		return out, nil
	case !labelled:
		return nil, &domain.ValidationError{Field: "selector", Msg: fmt.Sprintf("no provider has label %s (configured: %s)", joinKV(spec.Selector), configured)}
	case spec.Image != "":
		return nil, &domain.ValidationError{Field: "image", Msg: fmt.Sprintf("image given but no configured provider runs images (configured: %s)", configured)}
	default:
		return nil, &domain.ValidationError{Field: "image", Msg: fmt.Sprintf("no image given and no configured provider runs jobs without one (configured: %s)", configured)}
	}
}

// unfit says why a provider with capabilities c cannot run spec ("" if it can).
func unfit(spec domain.JobSpec, c provider.Capabilities) string {
	switch {
	case spec.Image != "" && !c.Images:
		return "it runs no images"
	case spec.Image == "" && c.RequiresImage:
		return "it needs an image"
	case !matches(spec.Selector, c.Labels):
		return "its labels do not match the selector " + joinKV(spec.Selector)
	}
	return ""
}

func matches(selector, labels map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func joinKV(m map[string]string) string {
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}
