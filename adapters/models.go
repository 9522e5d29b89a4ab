package adapters

import (
	"fmt"
	"strings"
	"time"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"

	"gateway/config"
)

// modelList says where a protocol lists its models, where the ids sit in
// the answer, and how its errors are classified.
type modelList struct {
	// path lists every model (list_models); probe asks for as few as the
	// protocol allows, since a probe only wants to know the key works.
	path, probe, ids string
	failure          func(*fasthttp.Response) *Failure
}

// modelLists holds each protocol's model list; mock has none.
var modelLists = map[string]modelList{
	"openai": {"/models", "/models", "data.#.id", (*openAI)(nil).failure},
	"anthropic": {"/v1/models?limit=1000", "/v1/models?limit=1", "data.#.id", func(r *fasthttp.Response) *Failure {
		return anthropicFailure(r.StatusCode(), &r.Header, r.Body(), time.Now())
	}},
	"gemini": {"/models?pageSize=1000", "/models?pageSize=1", `models.#(supportedGenerationMethods.#(=="generateContent"))#.name`,
		func(r *fasthttp.Response) *Failure {
			return geminiFailure(r.StatusCode(), r.Body(), r.Header.Peek(fasthttp.HeaderRetryAfter))
		}},
	"cohere": {"/v1/models?endpoint=chat&page_size=1000", "/v1/models?page_size=1", "models.#.name", (*cohere)(nil).failure},
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
	if f := listModels(p, where.path, 0, client, timeout, resp); f != nil {
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

// listModels asks the provider's model list at path with its key at index
// key (none when it has no keys) into resp.
func listModels(p *config.Provider, path string, key int, client *fasthttp.HostClient, timeout time.Duration, resp *fasthttp.Response) *Failure {
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	base := p.BaseURL
	if p.Protocol == "anthropic" || p.Protocol == "cohere" {
		// Their paths carry the version themselves.
		base = strings.TrimSuffix(base, "/v1")
	}
	req.SetRequestURI(base + path)
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
