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
// ids are what its generateContent path takes.
func ListModels(p *config.Provider, client *fasthttp.HostClient, timeout time.Duration) ([]string, error) {
	where, ok := modelLists[p.Protocol]
	if !ok {
		return nil, fmt.Errorf("provider %s: protocol %s has no model list", p.Name, p.Protocol)
	}
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	base := p.BaseURL
	if p.Protocol == "anthropic" || p.Protocol == "cohere" {
		// Their paths carry the version themselves.
		base = strings.TrimSuffix(base, "/v1")
	}
	req.SetRequestURI(base + where.path)
	if len(p.Keys) > 0 {
		SetKey(p.Protocol, &req.Header, p.Keys[0].Reveal())
	}
	for k, v := range p.Headers {
		req.Header.Set(k, v)
	}
	if err := client.DoTimeout(req, resp, timeout); err != nil {
		return nil, fmt.Errorf("provider %s: listing models: %w", p.Name, transportFailure(err))
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		return nil, fmt.Errorf("provider %s: listing models: upstream answered %d", p.Name, resp.StatusCode())
	}
	body := resp.Body()
	if !gjson.ValidBytes(body) {
		return nil, fmt.Errorf("provider %s: listing models: the answer is not JSON", p.Name)
	}
	var ids []string
	for _, r := range gjson.GetBytes(body, where.ids).Array() {
		if id := strings.TrimPrefix(r.Str, "models/"); id != "" {
			ids = append(ids, id)
		}
	}
	return ids, nil
}
