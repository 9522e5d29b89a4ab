package engine

import (
	"encoding/json"
	"strconv"

	"github.com/valyala/fasthttp"
)

// apiError is an error answer in OpenAI's shape.
type apiError struct {
	status int
	typ    string
	code   string
	param  string
	msg    string
	// retryAfter, in whole seconds, is sent as Retry-After when > 0.
	retryAfter int
}

func badRequest(param, code, msg string) *apiError {
	return &apiError{status: fasthttp.StatusBadRequest, typ: "invalid_request_error", code: code, param: param, msg: msg}
}

type errorBody struct {
	Error errorFields `json:"error"`
}

type errorFields struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    string  `json:"code"`
}

// write sends the error; it replaces any body already set.
func (e *apiError) write(ctx *fasthttp.RequestCtx) {
	f := errorFields{Message: e.msg, Type: e.typ, Code: e.code}
	if e.param != "" {
		f.Param = &e.param
	}
	b, _ := json.Marshal(errorBody{f})
	ctx.Response.ResetBody()
	ctx.SetStatusCode(e.status)
	ctx.SetContentTypeBytes(strJSON)
	if e.retryAfter > 0 {
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, strconv.Itoa(e.retryAfter))
	}
	ctx.SetBody(b)
}
