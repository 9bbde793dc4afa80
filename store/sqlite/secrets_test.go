package sqlite

import (
	"testing"

	"github.com/hodei-jobs/hodei/store/storetest"
)

func TestSecretsConformance(t *testing.T) { storetest.RunSecrets(t, factory) }
