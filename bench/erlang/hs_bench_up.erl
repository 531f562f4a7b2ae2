%% Upgradeable gen_server.  Compiled twice: default = vsn 1,
%% with {d,'V2'} = vsn 2 whose code_change doubles the integer state.
-module(hs_bench_up).
-behaviour(gen_server).
-ifdef(V2).
-vsn(2).
-else.
-vsn(1).
-endif.
-export([start/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, code_change/3]).

start(S) -> gen_server:start(?MODULE, S, []).

init(S) -> {ok, S}.

handle_call(get, _From, S) -> {reply, S, S}.
handle_cast(_Msg, S) -> {noreply, S}.
handle_info(_Msg, S) -> {noreply, S}.

-ifdef(V2).
code_change(_OldVsn, S, _Extra) -> {ok, S * 2}.
-else.
code_change(_OldVsn, S, _Extra) -> {ok, S}.
-endif.
