package adapters

import (
	"fmt"
	"strings"
	"time"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"

	"gateway/config"
)

// modelLists says where each protocol lists its models and where the ids
// sit in the answer.
var modelLists = map[string]struct{ path, ids string }{
	"openai":    {"/models", "data.#.id"},
	"anthropic": {"/v1/models?limit=1000", "data.#.id"},
	"gemini":    {"/models?pageSize=1000", `models.#(supportedGenerationMethods.#(=="generateContent"))#.name`},
	"cohere":    {"/v1/models?endpoint=chat&page_size=1000", "models.#.name"},
}

// ListModels fetches the ids of the models a provider serves, with its
// first key, for list_models. Gemini's "models/" prefix is dropped, so the
// ids are what its generateContent path takes. An id red finds a key in
// is left out: ids become model names, shown in /v1/models and the stats.
func ListModels(p *config.Provider, client *fasthttp.HostClient, timeout time.Duration, red *Redactor) ([]string, error) {
	where, ok := modelLists[p.Protocol]
	if !ok {
		return nil, fmt.Errorf("provider %s: protocol %s has no model list", p.Name, p.Protocol)
	}
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	if f := listModels(p, 0, client, timeout, resp); f != nil {
		return nil, fmt.Errorf("provider %s: listing models: %w", p.Name, red.failure(f))
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		return nil, fmt.Errorf("provider %s: listing models: upstream answered %d", p.Name, resp.StatusCode())
	}
	body := resp.Body()
	if CheckJSON(body) != nil {
		return nil, fmt.Errorf("provider %s: listing models: the answer is not JSON", p.Name)
	}
	var ids []string
	for _, r := range gjson.GetBytes(body, where.ids).Array() {
		if id := strings.TrimPrefix(r.Str, "models/"); id != "" && !red.Holds([]byte(id)) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// listModels asks the provider's model list with its key at index key
// (none when it has no keys) into resp.
func listModels(p *config.Provider, key int, client *fasthttp.HostClient, timeout time.Duration, resp *fasthttp.Response) *Failure {
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	base := p.BaseURL
	if p.Protocol == "anthropic" || p.Protocol == "cohere" {
		// Their paths carry the version themselves.
		base = strings.TrimSuffix(base, "/v1")
	}
	req.SetRequestURI(base + modelLists[p.Protocol].path)
	if key >= 0 && key < len(p.Keys) {
		SetKey(p.Protocol, &req.Header, p.Keys[key].Reveal())
	}
	for k, v := range p.Headers {
		req.Header.Set(k, v)
	}
	if err := client.DoTimeout(req, resp, timeout); err != nil {
		return transportFailure(err)
	}
	return nil
}

// KeyCheck is what a check of one provider key found.
type KeyCheck int

// The outcomes of CheckKey.
const (
	// KeyUnknown: the check could not tell (no model list for the
	// protocol, a connection error, a 5xx, a 429).
	KeyUnknown KeyCheck = iota
	// KeyWorks: the upstream accepted the key.
	KeyWorks
	// KeyRefused: the upstream answered 401 or 403.
	KeyRefused
)

// CheckKey asks whether the upstream accepts the provider's key at index
// key, with a call that spends no tokens: its model list.
func CheckKey(p *config.Provider, key int, client *fasthttp.HostClient, timeout time.Duration) KeyCheck {
	if _, ok := modelLists[p.Protocol]; !ok {
		return KeyUnknown
	}
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	if listModels(p, key, client, timeout, resp) != nil {
		return KeyUnknown
	}
	switch s := resp.StatusCode(); {
	case s >= 200 && s <= 299:
		return KeyWorks
	case classifyStatus(s) == Auth:
		return KeyRefused
	}
	return KeyUnknown
}
