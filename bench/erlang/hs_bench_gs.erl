%% Minimal gen_server: ping -> pong, cast inc, get state.
-module(hs_bench_gs).
-behaviour(gen_server).
-export([start/1, start_link/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

start(S) -> gen_server:start(?MODULE, S, []).
start_link(S) -> gen_server:start_link(?MODULE, S, []).

init({notify, To}) -> To ! {started, self()}, {ok, 0};
init(S) -> {ok, S}.

handle_call(ping, _From, S) -> {reply, pong, S};
handle_call(get, _From, S) -> {reply, S, S}.

handle_cast(inc, S) -> {noreply, S + 1}.

handle_info(_Msg, S) -> {noreply, S}.
